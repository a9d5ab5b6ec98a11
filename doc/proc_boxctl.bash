_proc_boxctl() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="proc_boxctl"
                ;;
            proc_boxctl,flush)
                cmd="proc_boxctl__subcmd__flush"
                ;;
            proc_boxctl,help)
                cmd="proc_boxctl__subcmd__help"
                ;;
            proc_boxctl,send)
                cmd="proc_boxctl__subcmd__send"
                ;;
            proc_boxctl,status)
                cmd="proc_boxctl__subcmd__status"
                ;;
            proc_boxctl,watch)
                cmd="proc_boxctl__subcmd__watch"
                ;;
            proc_boxctl__subcmd__help,flush)
                cmd="proc_boxctl__subcmd__help__subcmd__flush"
                ;;
            proc_boxctl__subcmd__help,help)
                cmd="proc_boxctl__subcmd__help__subcmd__help"
                ;;
            proc_boxctl__subcmd__help,send)
                cmd="proc_boxctl__subcmd__help__subcmd__send"
                ;;
            proc_boxctl__subcmd__help,status)
                cmd="proc_boxctl__subcmd__help__subcmd__status"
                ;;
            proc_boxctl__subcmd__help,watch)
                cmd="proc_boxctl__subcmd__help__subcmd__watch"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        proc_boxctl)
            opts="-h -V --generate --uri --exchange --rkey --skey --cacert --help --version send status watch flush help -generate -uri -exchange -rkey -skey -cacert -help -version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --generate)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --uri)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --exchange)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rkey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --skey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cacert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__flush)
            opts="-h --spool-dir --msgtimeout --any-broker --uri --exchange --rkey --skey --cacert --help -spool-dir -msgtimeout -any-broker -uri -exchange -rkey -skey -cacert -help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --spool-dir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --msgtimeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --uri)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --exchange)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rkey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --skey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cacert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__help)
            opts="send status watch flush help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__help__subcmd__flush)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__help__subcmd__send)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__help__subcmd__status)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__help__subcmd__watch)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__send)
            opts="-h --id --all --expect --wait --socket --control-token --control-token-file --uri --exchange --rkey --skey --cacert --help -id -all -expect -wait -socket -control-token -control-token-file -uri -exchange -rkey -skey -cacert -help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --id)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --expect)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --wait)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --socket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-token)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-token-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --uri)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --exchange)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rkey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --skey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cacert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__status)
            opts="-h --wait --socket --control-token --control-token-file --uri --exchange --rkey --skey --cacert --help -wait -socket -control-token -control-token-file -uri -exchange -rkey -skey -cacert -help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --wait)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --socket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-token)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-token-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --uri)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --exchange)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rkey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --skey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cacert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        proc_boxctl__subcmd__watch)
            opts="-h --id --json --count --for --uri --exchange --rkey --skey --cacert --help -id -json -count -for -uri -exchange -rkey -skey -cacert -help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --id)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --count)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --for)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --uri)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --exchange)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rkey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --skey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cacert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _proc_boxctl -o nosort -o bashdefault -o default proc_boxctl
else
    complete -F _proc_boxctl -o bashdefault -o default proc_boxctl
fi
