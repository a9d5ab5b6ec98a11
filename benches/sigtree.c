/* A tree of N processes for the AMQP benchmark: each blocks SIGUSR1, writes 'r' to FIFO once
 * ready, then writes one byte per SIGUSR1 it takes with sigwaitinfo. The benchmark times a
 * command from its publication to the N-th byte. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int n = atoi(argv[1]);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (int i = 1; i < n; i++) {
        pid_t p = fork();
        if (p < 0) return 1;
        if (p == 0) break;
    }
    int fd = open(argv[2], O_WRONLY);
    if (fd < 0) return 1;
    if (write(fd, "r", 1) != 1) return 1;
    for (;;) {
        siginfo_t info;
        if (sigwaitinfo(&set, &info) == SIGUSR1 && write(fd, "s", 1) != 1) return 1;
    }
}
