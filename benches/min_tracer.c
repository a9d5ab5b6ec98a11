/* The floor for ptrace mode: a minimal tracer with proc_box's options (PTRACE_SEIZE with
 * TRACEFORK, TRACEVFORK, TRACECLONE and EXITKILL), that restarts every stop, re-injects
 * signals and holds group-stops with PTRACE_LISTEN, and does nothing else. scripts/bench runs
 * it beside proc_box, so the ratio between the two is what proc_box's own work costs.
 *   min_tracer CMD ARGS...   exits with CMD's status */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int go[2];
    if (argc < 2 || pipe(go) != 0) return 125;
    pid_t child = fork();
    if (child == 0) {
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1) _exit(125);
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    long opts = PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL;
    if (ptrace(PTRACE_SEIZE, child, 0, opts) != 0) return 125;
    close(go[0]);
    if (write(go[1], "g", 1) != 1) return 125;
    int code = 125;
    for (;;) {
        int st;
        pid_t p = waitpid(-1, &st, __WALL);
        if (p < 0) {
            if (errno == EINTR) continue;
            break; /* ECHILD: nothing left */
        }
        if (WIFEXITED(st) || WIFSIGNALED(st)) {
            if (p == child) code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            continue;
        }
        if (!WIFSTOPPED(st)) continue;
        int sig = WSTOPSIG(st), event = st >> 16;
        if (event == 0)
            ptrace(PTRACE_CONT, p, 0, sig);
        else if (event == PTRACE_EVENT_STOP &&
                 (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU))
            ptrace(PTRACE_LISTEN, p, 0, 0);
        else
            ptrace(PTRACE_CONT, p, 0, 0);
    }
    return code;
}
