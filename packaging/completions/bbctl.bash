# bash completion for bbctl. Load with: source <(bbctl completion bash)

_bbctl_flags() {
    case "$1" in
        "completion") echo --address --json --timeout --version ;;
        "help") echo --address --json --timeout --version ;;
        "machine list") echo --address --json --timeout --version ;;
        "machine ls") echo --address --json --timeout --version ;;
        "machine restart") echo --address --json --timeout --version --wait ;;
        "machine shell") echo --address --json --timeout --version ;;
        "machine start") echo --address --json --timeout --version --wait ;;
        "machine stop") echo --address --json --timeout --version --wait ;;
        "network add-peer") echo --address --allowed-ips --endpoint --json --keepalive --public-key --timeout --version ;;
        "network apply") echo --address --json --timeout --version ;;
        "network describe") echo --address --json --timeout --version ;;
        "network get") echo --address --json --timeout --version ;;
        "network list") echo --address --json --timeout --version ;;
        "network ls") echo --address --json --timeout --version ;;
        "network remove-peer") echo --address --json --timeout --version ;;
        "template add") echo --address --json --ref --timeout --version ;;
        "template get") echo --address --json --timeout --version ;;
        "template list") echo --address --json --timeout --version ;;
        "template ls") echo --address --json --timeout --version ;;
        "template params") echo --address --json --timeout --version ;;
        "template pin") echo --address --json --timeout --version ;;
        "template remove") echo --address --json --timeout --version ;;
        "template rm") echo --address --json --timeout --version ;;
        "template rules") echo --address --json --timeout --version ;;
        "template update") echo --address --json --timeout --version ;;
        "template validate") echo --address --arch --base --json --timeout --type --version ;;
        "tenant create") echo --address --cpus --index --json --machine --memory --network-features --param --stopped --storage --template --timeout --version --wait ;;
        "tenant delete") echo --address --force --json --revision --timeout --version --wait ;;
        "tenant get") echo --address --json --timeout --version ;;
        "tenant list") echo --address --json --timeout --version ;;
        "tenant ls") echo --address --json --timeout --version ;;
        "tenant rm") echo --address --force --json --revision --timeout --version --wait ;;
        "tenant start") echo --address --json --timeout --version --wait ;;
        "tenant stop") echo --address --json --timeout --version --wait ;;
        "tenant update") echo --address --cpus --json --machine --memory --network-features --no-machines --param --revision --storage --template --timeout --version ;;
        "tenant user add") echo --address --json --ssh-key --ssh-key-file --template --timeout --version ;;
        "tenant user list") echo --address --json --timeout --version ;;
        "tenant user ls") echo --address --json --timeout --version ;;
        "tenant user remove") echo --address --json --timeout --version ;;
        "tenant user rm") echo --address --json --timeout --version ;;
        "tenant watch") echo --address --json --revision --timeout --version ;;
        "version") echo --address --json --timeout --version ;;
        *) echo --address --json --timeout ;;
    esac
}

_bbctl_subcommands() {
    case "$1" in
        machine) echo list start stop restart shell ;;
        network) echo get list add-peer remove-peer describe apply ;;
        template) echo add update pin get list remove validate params rules ;;
        tenant) echo create get list update delete start stop watch ;;
    esac
}

_bbctl_names() {
    # What argument $2 (from 0) of command $1 names.
    case "$1:$2" in
        "machine list:"*) echo tenants ;;
        "machine ls:"*) echo tenants ;;
        "machine restart:0") echo tenants ;;
        "machine restart:"*) echo machines ;;
        "machine shell:0") echo tenants ;;
        "machine shell:1") echo machines ;;
        "machine start:0") echo tenants ;;
        "machine start:"*) echo machines ;;
        "machine stop:0") echo tenants ;;
        "machine stop:"*) echo machines ;;
        "network add-peer:0") echo tenants ;;
        "network apply:0") echo tenants ;;
        "network describe:0") echo tenants ;;
        "network get:"*) echo tenants ;;
        "network remove-peer:0") echo tenants ;;
        "template get:"*) echo templates ;;
        "template params:0") echo templates ;;
        "template pin:0") echo templates ;;
        "template remove:"*) echo templates ;;
        "template rm:"*) echo templates ;;
        "template update:0") echo templates ;;
        "template validate:0") echo templates ;;
        "tenant delete:"*) echo tenants ;;
        "tenant get:"*) echo tenants ;;
        "tenant rm:"*) echo tenants ;;
        "tenant start:"*) echo tenants ;;
        "tenant stop:"*) echo tenants ;;
        "tenant update:0") echo tenants ;;
        "tenant watch:0") echo tenants ;;
    esac
}

_bbctl() {
    local cur prev i w cmd="" sub="" first="" nargs=0
    local -a addr=()
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev=""
    if ((COMP_CWORD > 0)); then
        prev="${COMP_WORDS[COMP_CWORD-1]}"
    fi
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in
            --address|-address)
                addr=(--address "${COMP_WORDS[i+1]}")
                ((i++))
                continue
                ;;
            --address|--allowed-ips|--arch|--base|--cpus|--endpoint|--index|--keepalive|--machine|--memory|--network-features|--param|--public-key|--ref|--revision|--ssh-key|--ssh-key-file|--storage|--template|--timeout|--type)
                ((i++))
                continue
                ;;
            -*) continue ;;
        esac
        if [[ -z "$cmd" ]]; then
            cmd="$w"
        elif [[ -z "$sub" && -n "$(_bbctl_subcommands "$cmd")" ]]; then
            sub="$w"
        else
            ((nargs == 0)) && first="$w"
            ((nargs++))
        fi
    done
    local path="$cmd"
    [[ -n "$sub" ]] && path="$cmd $sub"

    case "$prev" in
        --address) COMPREPLY=($(compgen -f -- "$cur")); return 0 ;;
        --address|--allowed-ips|--arch|--base|--cpus|--endpoint|--index|--keepalive|--machine|--memory|--network-features|--param|--public-key|--ref|--revision|--ssh-key|--ssh-key-file|--storage|--template|--timeout|--type) return 0 ;;
    esac

    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(_bbctl_flags "$path")" -- "$cur"))
        return 0
    fi
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W "tenant machine template network tenant tenant tenant version completion help" -- "$cur"))
        return 0
    fi
    local subs
    subs="$(_bbctl_subcommands "$cmd")"
    if [[ -n "$subs" && -z "$sub" ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
        return 0
    fi
    case "$cmd" in
        completion) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")); return 0 ;;
        help) COMPREPLY=($(compgen -W "tenant machine template network tenant tenant tenant version completion help" -- "$cur")); return 0 ;;
    esac
    local kind
    kind="$(_bbctl_names "$path" "$nargs")"
    case "$kind" in
        machines) COMPREPLY=($(compgen -W "$(bbctl "${addr[@]}" __complete machines "$first" 2>/dev/null)" -- "$cur")) ;;
        ?*) COMPREPLY=($(compgen -W "$(bbctl "${addr[@]}" __complete "$kind" 2>/dev/null)" -- "$cur")) ;;
    esac
    if ((nargs == 0)) && [[ "$path" == "template validate" ]]; then
        COMPREPLY+=($(compgen -d -- "$cur"))
    fi
    return 0
}

complete -F _bbctl bbctl
