# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_proc_boxctl_global_optspecs
    string join \n generate= uri= exchange= rkey= skey= cacert= h/help V/version
end

function __fish_proc_boxctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_proc_boxctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_proc_boxctl_using_subcommand
    set -l cmd (__fish_proc_boxctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -l generate -d 'print the man page (man) or a completion script (bash, zsh, fish, elvish, powershell) and exit; given alone, first' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -s V -l version -d 'Print version'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -f -a "send" -d 'send a command to one box (--id) or to every box (--all), and print the replies'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -f -a "status" -d 'show one box\'s state'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -f -a "watch" -d 'show every box seen on the exchange, live'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -f -a "flush" -d 'send the summaries spooled while the broker was away'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -f -a "ledger" -d 'the chargeback ledger: consume or import summaries into a database, exactly once'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -f -a "report" -d 'usage and cost per group over a period, like sreport'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -f -a "jobs" -d 'one line per stored job, like sacct -P'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -f -a "plot" -d 'draw one job (CPU, memory, I/O, processes, events) as an SVG, from its stats file'
complete -c proc_boxctl -n "__fish_proc_boxctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l id -d 'the box to address (its --id)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l expect -d 'with --all: stop as soon as N replies have come (exit 3 if fewer came within --wait)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l wait -d 'how long to wait for replies' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l socket -d 'talk to a local box\'s control socket instead of the broker' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l control-token -d 'the boxes\' control key (their --control-token): commands are signed with it, and only replies signed with it are believed' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l control-token-file -d 'read the control key from this file (its first line)' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -l all -d 'every box bound to the control key; each reply is printed as it comes, until --wait'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand send" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -l wait -d 'how long to wait for replies' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -l socket -d 'talk to a local box\'s control socket instead of the broker' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -l control-token -d 'the boxes\' control key (their --control-token): commands are signed with it, and only replies signed with it are believed' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -l control-token-file -d 'read the control key from this file (its first line)' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l id -d 'only this box' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l count -d 'exit after this many messages' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l for -d 'exit after this long' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l json -d 'print every message as it arrives, raw JSON, one per line'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -l no-header -d 'when piped, no header line before the plain lines'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand watch" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand flush" -l spool-dir -d 'the spool directory [default: $XDG_STATE_HOME/proc_box/spool, else /var/tmp/proc_box-<uid>/spool]' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand flush" -l msgtimeout -d 'how long each summary may take to be confirmed' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand flush" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand flush" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand flush" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand flush" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand flush" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand flush" -l any-broker -d 'also send summaries spooled for another broker or vhost to this one'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand flush" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -f -a "run" -d 'consume summaries from the broker into the database, exactly once, until killed'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -f -a "import" -d 'load --summary-file and --stats-file outputs and spool directories, exactly once'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -f -a "status" -d 'rows, time of the last ingest, dead letters, schema version'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and not __fish_seen_subcommand_from run import status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -l db -d 'the ledger database: sqlite:PATH, a path, or postgres://USER@HOST/DB [default: /var/lib/proc_box/ledger.sqlite for root, else $XDG_STATE_HOME/proc_box/ledger.sqlite]' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -l queue -d 'the durable quorum queue to consume; its dead letters go to QUEUE.dead' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -l batch -d 'summaries committed per transaction (at most)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -l samples -d 'also keep the samples, thinned to at most 500 points per job (plus 100 state changes), for plot --db and the HTML report'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from run" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from import" -l db -d 'the ledger database: sqlite:PATH, a path, or postgres://USER@HOST/DB [default: /var/lib/proc_box/ledger.sqlite for root, else $XDG_STATE_HOME/proc_box/ledger.sqlite]' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from import" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from import" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from import" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from import" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from import" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from import" -l samples -d 'also keep the stats files\' samples, thinned as ledger run --samples does'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from status" -l db -d 'the ledger database: sqlite:PATH, a path, or postgres://USER@HOST/DB [default: /var/lib/proc_box/ledger.sqlite for root, else $XDG_STATE_HOME/proc_box/ledger.sqlite]' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from status" -l format -d 'table or json' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from status" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from status" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from status" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from status" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from status" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from help" -f -a "run" -d 'consume summaries from the broker into the database, exactly once, until killed'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from help" -f -a "import" -d 'load --summary-file and --stats-file outputs and spool directories, exactly once'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from help" -f -a "status" -d 'rows, time of the last ingest, dead letters, schema version'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand ledger; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l db -d 'the ledger database: sqlite:PATH, a path, or postgres://USER@HOST/DB [default: /var/lib/proc_box/ledger.sqlite for root, else $XDG_STATE_HOME/proc_box/ledger.sqlite]' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l since -d 'jobs that ended at or after T: RFC 3339, a day (2026-12-01), today, yesterday, lastweek, lastmonth (UTC; a named period also sets --until)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l until -d 'jobs that ended before T (same forms)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l by -d 'group by: user, account, partition, host, day, week, month, reason, exit, label:NAME (comma-separated)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l rates -d 'a TOML rate card: adds the cost column' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l format -d 'table, csv, json, or html (one self-contained page: totals, charts, top jobs)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l every -d 'html: the chart over time by day, week or month [default: day up to 45 days, week up to a year, else month]' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand report" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l db -d 'the ledger database: sqlite:PATH, a path, or postgres://USER@HOST/DB [default: /var/lib/proc_box/ledger.sqlite for root, else $XDG_STATE_HOME/proc_box/ledger.sqlite]' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l since -d 'jobs that ended at or after T: RFC 3339, a day (2026-12-01), today, yesterday, lastweek, lastmonth (UTC; a named period also sets --until)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l until -d 'jobs that ended before T (same forms)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l user -d 'only this user (scheduler user, else login, else uid)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l account -d 'only this account' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l partition -d 'only this partition' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l host -d 'only this host' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l reason -d 'only jobs ended for this reason (exited, timeout, limit_memory, ...)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l format -d 'pipe (`sacct -P`: \'|\'-separated with a header), csv or json (one object per line)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand jobs" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -l box -d 'draw this box (its latest job, or its latest samples if still running) from the ledger\'s samples (ledger run --samples) and summary' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -l db -d 'the ledger database: sqlite:PATH, a path, or postgres://USER@HOST/DB [default: /var/lib/proc_box/ledger.sqlite for root, else $XDG_STATE_HOME/proc_box/ledger.sqlite]' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -s o -l output -d 'where to write the picture (\'-\' or unset: standard output)' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -l format -d 'svg (png is not built in: it would need a font rasteriser; convert the SVG with a browser or rsvg-convert)' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -l uri -d 'AMQP URI(s), comma-separated nodes of one cluster' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -l exchange -d 'topic exchange the boxes use' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -l rkey -d 'control routing key(s) the boxes bind; the first is used' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -l skey -d 'prefix of the boxes\' emission key' -r
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -l cacert -d 'PEM file of extra CA certificates for amqps://' -r -F
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand plot" -s h -l help -d 'Print help'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush ledger report jobs plot help" -f -a "send" -d 'send a command to one box (--id) or to every box (--all), and print the replies'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush ledger report jobs plot help" -f -a "status" -d 'show one box\'s state'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush ledger report jobs plot help" -f -a "watch" -d 'show every box seen on the exchange, live'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush ledger report jobs plot help" -f -a "flush" -d 'send the summaries spooled while the broker was away'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush ledger report jobs plot help" -f -a "ledger" -d 'the chargeback ledger: consume or import summaries into a database, exactly once'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush ledger report jobs plot help" -f -a "report" -d 'usage and cost per group over a period, like sreport'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush ledger report jobs plot help" -f -a "jobs" -d 'one line per stored job, like sacct -P'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush ledger report jobs plot help" -f -a "plot" -d 'draw one job (CPU, memory, I/O, processes, events) as an SVG, from its stats file'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush ledger report jobs plot help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and __fish_seen_subcommand_from ledger" -f -a "run" -d 'consume summaries from the broker into the database, exactly once, until killed'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and __fish_seen_subcommand_from ledger" -f -a "import" -d 'load --summary-file and --stats-file outputs and spool directories, exactly once'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and __fish_seen_subcommand_from ledger" -f -a "status" -d 'rows, time of the last ingest, dead letters, schema version'
