complete -c proc_box -l timeout -d 'wall-clock limit (0 = none); the job is stopped and proc_box exits 124' -r
complete -c proc_box -l grace -d 'time between the stop signal and SIGKILL' -r
complete -c proc_box -l stop-signal -d 'signal that starts a graceful stop' -r
complete -c proc_box -l on-main-exit -d 'what happens to leftover descendants when the main process exits' -r -f -a "kill\t'end every leftover process: the stop signal, then SIGKILL after --grace'
wait\t'wait for the whole tree to exit by itself'"
complete -c proc_box -l preserve-status -d 'on --timeout, exit with the command\'s status (128+N) instead of 124' -r -f -a "true\t''
false\t''"
complete -c proc_box -l kill-status -d 'on --timeout, exit 137 instead of 124 when SIGKILL had to follow after --grace (as `timeout -k`)' -r -f -a "true\t''
false\t''"
complete -c proc_box -l stdoutlimit -d 'stdout byte limit: graceful stop at the limit, SIGKILL at twice it' -r
complete -c proc_box -l memory-limit -d 'limit on the PSS of the whole tree, plus the shared memory (memfds, /dev/shm files) it holds open: graceful stop at the limit, SIGKILL at once past a tenth more (at least 16 MiB more)' -r
complete -c proc_box -l cpu-limit -d 'limit on the CPU time of the whole tree, exited and auto-reaped descendants included' -r
complete -c proc_box -l pids-limit -d 'limit on the live processes of the tree; in ptrace mode a fork past it dies before it runs' -r
complete -c proc_box -l rlimit -d 'a per-process limit set in the job before exec: nofile, core, as, fsize, nproc, stack, cpu (NAME=VALUE or NAME=SOFT:HARD; repeatable, or comma-separated in PBOX_RLIMIT)' -r
complete -c proc_box -l stats-file -d 'append a sample every --sint (and on SIGHUP or `sample`), then the summary, as JSON lines' -r -F
complete -c proc_box -l summary-file -d 'write the summary alone here, atomically, when the box ends' -r -F
complete -c proc_box -l sint -d 'interval between emitted samples (minimum 100ms)' -r
complete -c proc_box -l monitor -d 'how often tree memory is read for the peaks (minimum 10ms)' -r
complete -c proc_box -l format -d 'the end-of-job line, as /usr/bin/time -f: %e %U %S %P %M %x %C, %{summary_field}, %{user.key}, %%, \\n, \\t (printed to stderr even with --nowarn)' -r
complete -c proc_box -l json -d 'a JSON object copied into every sample and the summary as `user`' -r
complete -c proc_box -l allow-job-control -d 'let processes of the box\'s own tree use the control socket (refused by default)' -r -f -a "true\t''
false\t''"
complete -c proc_box -l control-token -d 'a secret that keys an HMAC every command (socket or AMQP) must be signed with, and every reply is; prefer the _FILE form or the environment (a command line is visible to all)' -r
complete -c proc_box -l control-token-file -d 'read the control token from this file (its first line)' -r -F
complete -c proc_box -l control-socket -d 'Unix socket (mode 0600) taking one JSON command per line' -r -F
complete -c proc_box -l track -d 'how descendants are found' -r -f -a "auto\t'ptrace when the kernel allows it, otherwise subreaper (with one warning)'
ptrace\t'learn of every fork through ptrace events; fail with status 125 if ptrace is refused'
subreaper\t'no ptrace: walk the kernel\'s children lists on SIGCHLD and on every tick'"
complete -c proc_box -l cgroup -d 'put the box in a cgroup of its own: where one can be made (auto), never, or required' -r -f -a "auto\t'use a cgroup where one can be made; otherwise run without, silently'
off\t'never make one'
required\t'fail with status 125 if none can be made'"
complete -c proc_box -l id -d 'box id, used in messages and in the per-box control routing key [default: the scheduler\'s job id, else <hostname>-<pid>]' -r
complete -c proc_box -l debug -d 'log debugging detail on stderr' -r -f -a "true\t''
false\t''"
complete -c proc_box -l nowarn -d 'log errors only' -r -f -a "true\t''
false\t''"
complete -c proc_box -l generate -d 'print the man page (man) or a completion script (bash, zsh, fish, elvish, powershell) and exit; given alone, first' -r
complete -c proc_box -l uri -d 'AMQP URI (amqp:// or amqps://); unset means no broker' -r
complete -c proc_box -l exchange -d 'topic exchange for control and emission' -r
complete -c proc_box -l rkey -d 'control routing key; a comma-separated list binds several' -r
complete -c proc_box -l skey -d 'prefix of the emission routing key (.<hostname> is appended)' -r
complete -c proc_box -l msgtimeout -d 'how long one message may take to be sent and confirmed (0 = no limit)' -r
complete -c proc_box -l runanyway -d 'accepted for compatibility: broker trouble never stops the job' -r -f -a "true\t''
false\t''"
complete -c proc_box -l multiRmtKey -d 'accepted for compatibility: rkey lists always work' -r -f -a "true\t''
false\t''"
complete -c proc_box -l spool-dir -d 'where undelivered summaries wait for a later run or `proc_boxctl flush` [default: $XDG_STATE_HOME/proc_box/spool, else /var/tmp/proc_box-<uid>/spool]' -r -F
complete -c proc_box -l spool-max-files -d 'most summaries the spool keeps; beyond, the oldest are dropped, and named on stderr' -r
complete -c proc_box -l spool-max-bytes -d 'most bytes the spool keeps; beyond, the oldest summaries are dropped, and named on stderr' -r
complete -c proc_box -l cacert -d 'PEM file of extra CA certificates for amqps:// (the system\'s are trusted as well)' -r -F
complete -c proc_box -l sample-buffer -d 'samples kept while the broker is away; beyond this the oldest are dropped (and counted)' -r
complete -c proc_box -s h -l help -d 'Print help (see more with \'--help\')'
complete -c proc_box -s V -l version -d 'Print version'
