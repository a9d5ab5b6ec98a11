#compdef proc_box

autoload -U is-at-least

_proc_box() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'--timeout=[wall-clock limit (0 = none); the job is stopped and proc_box exits 124]:DURATION:_default' \
'--grace=[time between the stop signal and SIGKILL]:DURATION:_default' \
'--stop-signal=[signal that starts a graceful stop]:SIGNAL:_default' \
'--on-main-exit=[what happens to leftover descendants when the main process exits]:ON_MAIN_EXIT:((kill\:"end every leftover process\: the stop signal, then SIGKILL after --grace"
wait\:"wait for the whole tree to exit by itself"))' \
'--preserve-status=[on --timeout, exit with the command'\''s status (128+N) instead of 124]::PRESERVE_STATUS:(true false)' \
'--kill-status=[on --timeout, exit 137 instead of 124 when SIGKILL had to follow after --grace (as \`timeout -k\`)]::KILL_STATUS:(true false)' \
'--stdoutlimit=[stdout byte limit\: graceful stop at the limit, SIGKILL at twice it]:SIZE:_default' \
'--memory-limit=[limit on the PSS of the whole tree, plus the shared memory (memfds, /dev/shm files) it holds open\: graceful stop at the limit, SIGKILL at once past a tenth more (at least 16 MiB more)]:SIZE:_default' \
'--cpu-limit=[limit on the CPU time of the whole tree, exited and auto-reaped descendants included]:DURATION:_default' \
'--pids-limit=[limit on the live processes of the tree; in ptrace mode a fork past it dies before it runs]:N:_default' \
'*--rlimit=[a per-process limit set in the job before exec\: nofile, core, as, fsize, nproc, stack, cpu (NAME=VALUE or NAME=SOFT\:HARD; repeatable, or comma-separated in PBOX_RLIMIT)]:NAME=VALUE:_default' \
'--stats-file=[append a sample every --sint (and on SIGHUP or \`sample\`), then the summary, as JSON lines]:PATH:_files' \
'--summary-file=[write the summary alone here, atomically, when the box ends]:PATH:_files' \
'--sint=[interval between emitted samples (minimum 100ms)]:DURATION:_default' \
'--monitor=[how often tree memory is read for the peaks (minimum 10ms)]:DURATION:_default' \
'--format=[the end-of-job line, as /usr/bin/time -f\: %e %U %S %P %M %x %C, %{summary_field}, %{user.key}, %%, \\n, \\t (printed to stderr even with --nowarn)]:STRING:_default' \
'--json=[a JSON object copied into every sample and the summary as \`user\`]:OBJECT:_default' \
'--allow-job-control=[let processes of the box'\''s own tree use the control socket (refused by default)]::ALLOW_JOB_CONTROL:(true false)' \
'--control-token=[a secret that keys an HMAC every command (socket or AMQP) must be signed with, and every reply is; prefer the _FILE form or the environment (a command line is visible to all)]:TOKEN:_default' \
'--control-token-file=[read the control token from this file (its first line)]:PATH:_files' \
'--control-socket=[Unix socket (mode 0600) taking one JSON command per line]:PATH:_files' \
'--track=[how descendants are found]:TRACK:((auto\:"ptrace when the kernel allows it, otherwise subreaper (with one warning)"
ptrace\:"learn of every fork through ptrace events; fail with status 125 if ptrace is refused"
subreaper\:"no ptrace\: walk the kernel'\''s children lists on SIGCHLD and on every tick"))' \
'--cgroup=[put the box in a cgroup of its own\: where one can be made (auto), never, or required]:CGROUP:((auto\:"use a cgroup where one can be made; otherwise run without, silently"
off\:"never make one"
required\:"fail with status 125 if none can be made"))' \
'--id=[box id, used in messages and in the per-box control routing key \[default\: the scheduler'\''s job id, else <hostname>-<pid>\]]:ID:_default' \
'--debug=[log debugging detail on stderr]::DEBUG:(true false)' \
'--nowarn=[log errors only]::NOWARN:(true false)' \
'--generate=[print the man page (man) or a completion script (bash, zsh, fish, elvish, powershell) and exit; given alone, first]:WHAT:_default' \
'--uri=[AMQP URI (amqp\:// or amqps\://); unset means no broker]:URI:_default' \
'--exchange=[topic exchange for control and emission]:EXCHANGE:_default' \
'--rkey=[control routing key; a comma-separated list binds several]:RKEY:_default' \
'--skey=[prefix of the emission routing key (.<hostname> is appended)]:SKEY:_default' \
'--msgtimeout=[how long one message may take to be sent and confirmed (0 = no limit)]:DURATION:_default' \
'--runanyway=[accepted for compatibility\: broker trouble never stops the job]::RUNANYWAY:(true false)' \
'--multiRmtKey=[accepted for compatibility\: rkey lists always work]::MULTI_RMT_KEY:(true false)' \
'--spool-dir=[where undelivered summaries wait for a later run or \`proc_boxctl flush\` \[default\: \$XDG_STATE_HOME/proc_box/spool, else /var/tmp/proc_box-<uid>/spool\]]:PATH:_files' \
'--spool-max-files=[most summaries the spool keeps; beyond, the oldest are dropped, and named on stderr]:N:_default' \
'--spool-max-bytes=[most bytes the spool keeps; beyond, the oldest summaries are dropped, and named on stderr]:SIZE:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\:// (the system'\''s are trusted as well)]:PATH:_files' \
'--sample-buffer=[samples kept while the broker is away; beyond this the oldest are dropped (and counted)]:N:_default' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
'*::command -- the command to run, and its arguments:_default' \
&& ret=0
}

(( $+functions[_proc_box_commands] )) ||
_proc_box_commands() {
    local commands; commands=()
    _describe -t commands 'proc_box commands' commands "$@"
}

if [ "$funcstack[1]" = "_proc_box" ]; then
    _proc_box "$@"
else
    compdef _proc_box proc_box
fi
