#compdef proc_boxctl

autoload -U is-at-least

_proc_boxctl() {
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
'--generate=[print the man page (man) or a completion script (bash, zsh, fish, elvish, powershell) and exit; given alone, first]:WHAT:_default' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_proc_boxctl_commands" \
"*::: :->proc_boxctl" \
&& ret=0
    case $state in
    (proc_boxctl)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:proc_boxctl-command-$line[1]:"
        case $line[1] in
            (send)
_arguments "${_arguments_options[@]}" : \
'(--all)--id=[the box to address (its --id)]:ID:_default' \
'--expect=[with --all\: stop as soon as N replies have come (exit 3 if fewer came within --wait)]:N:_default' \
'--wait=[how long to wait for replies]:WAIT:_default' \
'--socket=[talk to a local box'\''s control socket instead of the broker]:PATH:_files' \
'--control-token=[the boxes'\'' control key (their --control-token)\: commands are signed with it, and only replies signed with it are believed]:TOKEN:_default' \
'--control-token-file=[read the control key from this file (its first line)]:PATH:_files' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'--all[every box bound to the control key; each reply is printed as it comes, until --wait]' \
'-h[Print help]' \
'--help[Print help]' \
':command -- the command (stop, suspend, resume, kill, sample, change_sample_rate, timer_*, status):_default' \
'*::arguments -- its arguments, such as a signal for kill or a duration for change_sample_rate:_default' \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
'--wait=[how long to wait for replies]:WAIT:_default' \
'--socket=[talk to a local box'\''s control socket instead of the broker]:PATH:_files' \
'--control-token=[the boxes'\'' control key (their --control-token)\: commands are signed with it, and only replies signed with it are believed]:TOKEN:_default' \
'--control-token-file=[read the control key from this file (its first line)]:PATH:_files' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
'::id -- the box (its --id); not needed with --socket:_default' \
&& ret=0
;;
(watch)
_arguments "${_arguments_options[@]}" : \
'--id=[only this box]:ID:_default' \
'--count=[exit after this many messages]:N:_default' \
'--for=[exit after this long]:DURATION:_default' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'--json[print every message as it arrives, raw JSON, one per line]' \
'--no-header[when piped, no header line before the plain lines]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(flush)
_arguments "${_arguments_options[@]}" : \
'--spool-dir=[the spool directory \[default\: \$XDG_STATE_HOME/proc_box/spool, else /var/tmp/proc_box-<uid>/spool\]]:PATH:_files' \
'--msgtimeout=[how long each summary may take to be confirmed]:MSGTIMEOUT:_default' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'--any-broker[also send summaries spooled for another broker or vhost to this one]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(ledger)
_arguments "${_arguments_options[@]}" : \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
":: :_proc_boxctl__subcmd__ledger_commands" \
"*::: :->ledger" \
&& ret=0

    case $state in
    (ledger)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:proc_boxctl-ledger-command-$line[1]:"
        case $line[1] in
            (run)
_arguments "${_arguments_options[@]}" : \
'--db=[the ledger database\: sqlite\:PATH, a path, or postgres\://USER@HOST/DB \[default\: /var/lib/proc_box/ledger.sqlite for root, else \$XDG_STATE_HOME/proc_box/ledger.sqlite\]]:URL:_default' \
'--queue=[the durable quorum queue to consume; its dead letters go to QUEUE.dead]:QUEUE:_default' \
'--batch=[summaries committed per transaction (at most)]:BATCH:_default' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'--samples[also keep the samples, thinned to at most 500 points per job (plus 100 state changes), for plot --db and the HTML report]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(import)
_arguments "${_arguments_options[@]}" : \
'--db=[the ledger database\: sqlite\:PATH, a path, or postgres\://USER@HOST/DB \[default\: /var/lib/proc_box/ledger.sqlite for root, else \$XDG_STATE_HOME/proc_box/ledger.sqlite\]]:URL:_default' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'--samples[also keep the stats files'\'' samples, thinned as ledger run --samples does]' \
'-h[Print help]' \
'--help[Print help]' \
'*::paths -- summary files, stats files (their summary line) or spool directories:_files' \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
'--db=[the ledger database\: sqlite\:PATH, a path, or postgres\://USER@HOST/DB \[default\: /var/lib/proc_box/ledger.sqlite for root, else \$XDG_STATE_HOME/proc_box/ledger.sqlite\]]:URL:_default' \
'--format=[table or json]:FORMAT:_default' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_proc_boxctl__subcmd__ledger__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:proc_boxctl-ledger-help-command-$line[1]:"
        case $line[1] in
            (run)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(import)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
;;
(report)
_arguments "${_arguments_options[@]}" : \
'--db=[the ledger database\: sqlite\:PATH, a path, or postgres\://USER@HOST/DB \[default\: /var/lib/proc_box/ledger.sqlite for root, else \$XDG_STATE_HOME/proc_box/ledger.sqlite\]]:URL:_default' \
'--since=[jobs that ended at or after T\: RFC 3339, a day (2026-12-01), today, yesterday, lastweek, lastmonth (UTC; a named period also sets --until)]:T:_default' \
'--until=[jobs that ended before T (same forms)]:T:_default' \
'--by=[group by\: user, account, partition, host, day, week, month, reason, exit, label\:NAME (comma-separated)]:KEY[,KEY...]:_default' \
'--rates=[a TOML rate card\: adds the cost column]:FILE:_files' \
'--format=[table, csv, json, or html (one self-contained page\: totals, charts, top jobs)]:FORMAT:_default' \
'--every=[html\: the chart over time by day, week or month \[default\: day up to 45 days, week up to a year, else month\]]:PERIOD:_default' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(jobs)
_arguments "${_arguments_options[@]}" : \
'--db=[the ledger database\: sqlite\:PATH, a path, or postgres\://USER@HOST/DB \[default\: /var/lib/proc_box/ledger.sqlite for root, else \$XDG_STATE_HOME/proc_box/ledger.sqlite\]]:URL:_default' \
'--since=[jobs that ended at or after T\: RFC 3339, a day (2026-12-01), today, yesterday, lastweek, lastmonth (UTC; a named period also sets --until)]:T:_default' \
'--until=[jobs that ended before T (same forms)]:T:_default' \
'--user=[only this user (scheduler user, else login, else uid)]:USER:_default' \
'--account=[only this account]:ACCOUNT:_default' \
'--partition=[only this partition]:PARTITION:_default' \
'--host=[only this host]:HOST:_default' \
'--reason=[only jobs ended for this reason (exited, timeout, limit_memory, ...)]:REASON:_default' \
'--format=[pipe (\`sacct -P\`\: '\''|'\''-separated with a header), csv or json (one object per line)]:FORMAT:_default' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(plot)
_arguments "${_arguments_options[@]}" : \
'--box=[draw this box (its latest job, or its latest samples if still running) from the ledger'\''s samples (ledger run --samples) and summary]:ID:_default' \
'--db=[the ledger database\: sqlite\:PATH, a path, or postgres\://USER@HOST/DB \[default\: /var/lib/proc_box/ledger.sqlite for root, else \$XDG_STATE_HOME/proc_box/ledger.sqlite\]]:URL:_default' \
'-o+[where to write the picture ('\''-'\'' or unset\: standard output)]:FILE:_files' \
'--output=[where to write the picture ('\''-'\'' or unset\: standard output)]:FILE:_files' \
'--format=[svg (png is not built in\: it would need a font rasteriser; convert the SVG with a browser or rsvg-convert)]:FORMAT:_default' \
'--uri=[AMQP URI(s), comma-separated nodes of one cluster]:URI:_default' \
'--exchange=[topic exchange the boxes use]:EXCHANGE:_default' \
'--rkey=[control routing key(s) the boxes bind; the first is used]:RKEY:_default' \
'--skey=[prefix of the boxes'\'' emission key]:SKEY:_default' \
'--cacert=[PEM file of extra CA certificates for amqps\://]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
'::stats -- a --stats-file output\: samples, one JSON object per line, then the summary:_files' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_proc_boxctl__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:proc_boxctl-help-command-$line[1]:"
        case $line[1] in
            (send)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(watch)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(flush)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(ledger)
_arguments "${_arguments_options[@]}" : \
":: :_proc_boxctl__subcmd__help__subcmd__ledger_commands" \
"*::: :->ledger" \
&& ret=0

    case $state in
    (ledger)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:proc_boxctl-help-ledger-command-$line[1]:"
        case $line[1] in
            (run)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(import)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
(report)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(jobs)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(plot)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_proc_boxctl_commands] )) ||
_proc_boxctl_commands() {
    local commands; commands=(
'send:send a command to one box (--id) or to every box (--all), and print the replies' \
'status:show one box'\''s state' \
'watch:show every box seen on the exchange, live' \
'flush:send the summaries spooled while the broker was away' \
'ledger:the chargeback ledger\: consume or import summaries into a database, exactly once' \
'report:usage and cost per group over a period, like sreport' \
'jobs:one line per stored job, like sacct -P' \
'plot:draw one job (CPU, memory, I/O, processes, events) as an SVG, from its stats file' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'proc_boxctl commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__flush_commands] )) ||
_proc_boxctl__subcmd__flush_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl flush commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help_commands] )) ||
_proc_boxctl__subcmd__help_commands() {
    local commands; commands=(
'send:send a command to one box (--id) or to every box (--all), and print the replies' \
'status:show one box'\''s state' \
'watch:show every box seen on the exchange, live' \
'flush:send the summaries spooled while the broker was away' \
'ledger:the chargeback ledger\: consume or import summaries into a database, exactly once' \
'report:usage and cost per group over a period, like sreport' \
'jobs:one line per stored job, like sacct -P' \
'plot:draw one job (CPU, memory, I/O, processes, events) as an SVG, from its stats file' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'proc_boxctl help commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__flush_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__flush_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help flush commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__help_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help help commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__jobs_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__jobs_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help jobs commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__ledger_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__ledger_commands() {
    local commands; commands=(
'run:consume summaries from the broker into the database, exactly once, until killed' \
'import:load --summary-file and --stats-file outputs and spool directories, exactly once' \
'status:rows, time of the last ingest, dead letters, schema version' \
    )
    _describe -t commands 'proc_boxctl help ledger commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__ledger__subcmd__import_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__ledger__subcmd__import_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help ledger import commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__ledger__subcmd__run_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__ledger__subcmd__run_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help ledger run commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__ledger__subcmd__status_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__ledger__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help ledger status commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__plot_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__plot_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help plot commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__report_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__report_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help report commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__send_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__send_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help send commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__status_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help status commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__help__subcmd__watch_commands] )) ||
_proc_boxctl__subcmd__help__subcmd__watch_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl help watch commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__jobs_commands] )) ||
_proc_boxctl__subcmd__jobs_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl jobs commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__ledger_commands] )) ||
_proc_boxctl__subcmd__ledger_commands() {
    local commands; commands=(
'run:consume summaries from the broker into the database, exactly once, until killed' \
'import:load --summary-file and --stats-file outputs and spool directories, exactly once' \
'status:rows, time of the last ingest, dead letters, schema version' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'proc_boxctl ledger commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__ledger__subcmd__help_commands] )) ||
_proc_boxctl__subcmd__ledger__subcmd__help_commands() {
    local commands; commands=(
'run:consume summaries from the broker into the database, exactly once, until killed' \
'import:load --summary-file and --stats-file outputs and spool directories, exactly once' \
'status:rows, time of the last ingest, dead letters, schema version' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'proc_boxctl ledger help commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__ledger__subcmd__help__subcmd__help_commands] )) ||
_proc_boxctl__subcmd__ledger__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl ledger help help commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__ledger__subcmd__help__subcmd__import_commands] )) ||
_proc_boxctl__subcmd__ledger__subcmd__help__subcmd__import_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl ledger help import commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__ledger__subcmd__help__subcmd__run_commands] )) ||
_proc_boxctl__subcmd__ledger__subcmd__help__subcmd__run_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl ledger help run commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__ledger__subcmd__help__subcmd__status_commands] )) ||
_proc_boxctl__subcmd__ledger__subcmd__help__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl ledger help status commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__ledger__subcmd__import_commands] )) ||
_proc_boxctl__subcmd__ledger__subcmd__import_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl ledger import commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__ledger__subcmd__run_commands] )) ||
_proc_boxctl__subcmd__ledger__subcmd__run_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl ledger run commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__ledger__subcmd__status_commands] )) ||
_proc_boxctl__subcmd__ledger__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl ledger status commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__plot_commands] )) ||
_proc_boxctl__subcmd__plot_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl plot commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__report_commands] )) ||
_proc_boxctl__subcmd__report_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl report commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__send_commands] )) ||
_proc_boxctl__subcmd__send_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl send commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__status_commands] )) ||
_proc_boxctl__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl status commands' commands "$@"
}
(( $+functions[_proc_boxctl__subcmd__watch_commands] )) ||
_proc_boxctl__subcmd__watch_commands() {
    local commands; commands=()
    _describe -t commands 'proc_boxctl watch commands' commands "$@"
}

if [ "$funcstack[1]" = "_proc_boxctl" ]; then
    _proc_boxctl "$@"
else
    compdef _proc_boxctl proc_boxctl
fi
