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
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush help" -f -a "send" -d 'send a command to one box (--id) or to every box (--all), and print the replies'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush help" -f -a "status" -d 'show one box\'s state'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush help" -f -a "watch" -d 'show every box seen on the exchange, live'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush help" -f -a "flush" -d 'send the summaries spooled while the broker was away'
complete -c proc_boxctl -n "__fish_proc_boxctl_using_subcommand help; and not __fish_seen_subcommand_from send status watch flush help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
