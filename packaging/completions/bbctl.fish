# fish completion for bbctl. Install with: bbctl completion fish > ~/.config/fish/completions/bbctl.fish

function __bbctl_path
    # Prints the command words (group and subcommand) given so far.
    set -l words (commandline -opc)
    set -e words[1]
    set -l out
    set -l skip 0
    for w in $words
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $w
            case --address --allowed-ips --arch --base --cpus --endpoint --index --keepalive --machine --memory --network-features --param --public-key --ref --revision --ssh-key --ssh-key-file --storage --template --timeout --type
                set skip 1
            case '-*'
            case '*'
                set -a out $w
        end
    end
    echo $out
end

function __bbctl_at
    # True when the command words given so far are exactly $argv.
    set -l p (__bbctl_path)
    test "$p" = "$argv"
end

function __bbctl_in
    # True when the command words start with $argv (flags of that command).
    set -l p (__bbctl_path)
    string match -q -- "$argv*" "$p"
end

function __bbctl_arg
    # True when the command words are the command $argv[1] and then $argv[2] arguments (with
    # a + after the number: at least that many).
    set -l p (string split ' ' -- (__bbctl_path))
    set -l c (string split ' ' -- $argv[1])
    set -l n (count $c)
    test (count $p) -ge $n; or return 1
    test "$p[1..$n]" = "$c"; or return 1
    set -l have (math (count $p) - $n)
    set -l want (string trim -r -c + -- $argv[2])
    if string match -q -- '*+' $argv[2]
        test $have -ge $want
    else
        test $have -eq $want
    end
end

function __bbctl_word
    # Prints command word $argv[1] (counting from 1) of those given so far.
    set -l p (string split ' ' -- (__bbctl_path))
    echo $p[$argv[1]]
end

complete -c bbctl -f
complete -c bbctl -n '__bbctl_at ""' -a tenant -d "create, inspect, change and delete tenants"
complete -c bbctl -n '__bbctl_at ""' -a machine -d "list, start, stop and restart tenants' machines, and open a shell in one"
complete -c bbctl -n '__bbctl_at ""' -a template -d "manage the template registry and validate templates"
complete -c bbctl -n '__bbctl_at ""' -a network -d "inspect tenant networks and manage WireGuard peers"
complete -c bbctl -n '__bbctl_at ""' -a tenant -d "create, inspect, change and delete tenants"
complete -c bbctl -n '__bbctl_at ""' -a tenant -d "create, inspect, change and delete tenants"
complete -c bbctl -n '__bbctl_at ""' -a tenant -d "create, inspect, change and delete tenants"
complete -c bbctl -n '__bbctl_at ""' -a version -d "print bbctl's version and the daemon's, when it is reachable"
complete -c bbctl -n '__bbctl_at ""' -a completion -d "print a shell completion script"
complete -c bbctl -n '__bbctl_at ""' -a help -d "show help for bbctl or a command"
complete -c bbctl -n '__bbctl_at machine' -a list -d "list the machines of all tenants or of the tenants named"
complete -c bbctl -n '__bbctl_at machine' -a start -d "set machines' desired state to running"
complete -c bbctl -n '__bbctl_at machine' -a stop -d "set machines' desired state to stopped"
complete -c bbctl -n '__bbctl_at machine' -a restart -d "restart machines, starting those that are stopped"
complete -c bbctl -n '__bbctl_at machine' -a shell -d "open a shell, or run a command, in a machine with machinectl"
complete -c bbctl -n '__bbctl_at network' -a get -d "show tenants' networks: links, leases, peers and problems"
complete -c bbctl -n '__bbctl_at network' -a list -d "list the tenants' networks"
complete -c bbctl -n '__bbctl_at network' -a add-peer -d "add a WireGuard peer to a tenant"
complete -c bbctl -n '__bbctl_at network' -a remove-peer -d "remove a WireGuard peer from a tenant"
complete -c bbctl -n '__bbctl_at network' -a describe -d "print a tenant's rendered networkd files without writing them"
complete -c bbctl -n '__bbctl_at network' -a apply -d "write a tenant's networkd files and reload networkd"
complete -c bbctl -n '__bbctl_at template' -a add -d "fetch a template repository, validate it and pin it"
complete -c bbctl -n '__bbctl_at template' -a update -d "fetch a template again and move the pin when the new commit validates"
complete -c bbctl -n '__bbctl_at template' -a pin -d "pin a template to a fetched commit, for example to roll back"
complete -c bbctl -n '__bbctl_at template' -a get -d "show templates"
complete -c bbctl -n '__bbctl_at template' -a list -d "list the templates in the registry"
complete -c bbctl -n '__bbctl_at template' -a remove -d "remove templates that no tenant uses"
complete -c bbctl -n '__bbctl_at template' -a validate -d "validate a template directory or a registered template"
complete -c bbctl -n '__bbctl_at template' -a params -d "list the parameters a template takes: name, type, default and description"
complete -c bbctl -n '__bbctl_at template' -a rules -d "show the validator's rules, or one rule in full"
complete -c bbctl -n '__bbctl_at tenant' -a create -d "create a tenant"
complete -c bbctl -n '__bbctl_at tenant' -a get -d "show tenants"
complete -c bbctl -n '__bbctl_at tenant' -a list -d "list tenants"
complete -c bbctl -n '__bbctl_at tenant' -a update -d "change a tenant's limits, templates or parameters"
complete -c bbctl -n '__bbctl_at tenant' -a delete -d "delete tenants"
complete -c bbctl -n '__bbctl_at tenant' -a start -d "set tenants' desired state to running"
complete -c bbctl -n '__bbctl_at tenant' -a stop -d "set tenants' desired state to stopped"
complete -c bbctl -n '__bbctl_at tenant' -a watch -d "stream changes to tenants, one line each"
complete -c bbctl -n '__bbctl_at completion' -a 'bash zsh fish'
complete -c bbctl -n '__bbctl_arg "machine list" 0+' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "machine ls" 0+' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "machine restart" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "machine restart" 1+' -a '(bbctl __complete machines (__bbctl_word 3) 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "machine shell" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "machine shell" 1' -a '(bbctl __complete machines (__bbctl_word 3) 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "machine start" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "machine start" 1+' -a '(bbctl __complete machines (__bbctl_word 3) 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "machine stop" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "machine stop" 1+' -a '(bbctl __complete machines (__bbctl_word 3) 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "network add-peer" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "network apply" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "network describe" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "network get" 0+' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "network remove-peer" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "template get" 0+' -a '(bbctl __complete templates 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "template params" 0' -a '(bbctl __complete templates 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "template pin" 0' -a '(bbctl __complete templates 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "template remove" 0+' -a '(bbctl __complete templates 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "template rm" 0+' -a '(bbctl __complete templates 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "template update" 0' -a '(bbctl __complete templates 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "template validate" 0' -a '(bbctl __complete templates 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "tenant delete" 0+' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "tenant get" 0+' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "tenant rm" 0+' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "tenant start" 0+' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "tenant stop" 0+' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "tenant update" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_arg "tenant watch" 0' -a '(bbctl __complete tenants 2>/dev/null)'
complete -c bbctl -n '__bbctl_at template validate' -F
complete -c bbctl -n '__bbctl_in completion' -l version
complete -c bbctl -n '__bbctl_in help' -l version
complete -c bbctl -n '__bbctl_in machine list' -l version
complete -c bbctl -n '__bbctl_in machine ls' -l version
complete -c bbctl -n '__bbctl_in machine restart' -l version
complete -c bbctl -n '__bbctl_in machine restart' -l wait
complete -c bbctl -n '__bbctl_in machine shell' -l version
complete -c bbctl -n '__bbctl_in machine start' -l version
complete -c bbctl -n '__bbctl_in machine start' -l wait
complete -c bbctl -n '__bbctl_in machine stop' -l version
complete -c bbctl -n '__bbctl_in machine stop' -l wait
complete -c bbctl -n '__bbctl_in network add-peer' -l allowed-ips -r
complete -c bbctl -n '__bbctl_in network add-peer' -l endpoint -r
complete -c bbctl -n '__bbctl_in network add-peer' -l keepalive -r
complete -c bbctl -n '__bbctl_in network add-peer' -l public-key -r
complete -c bbctl -n '__bbctl_in network add-peer' -l version
complete -c bbctl -n '__bbctl_in network apply' -l version
complete -c bbctl -n '__bbctl_in network describe' -l version
complete -c bbctl -n '__bbctl_in network get' -l version
complete -c bbctl -n '__bbctl_in network list' -l version
complete -c bbctl -n '__bbctl_in network ls' -l version
complete -c bbctl -n '__bbctl_in network remove-peer' -l version
complete -c bbctl -n '__bbctl_in template add' -l ref -r
complete -c bbctl -n '__bbctl_in template add' -l version
complete -c bbctl -n '__bbctl_in template get' -l version
complete -c bbctl -n '__bbctl_in template list' -l version
complete -c bbctl -n '__bbctl_in template ls' -l version
complete -c bbctl -n '__bbctl_in template params' -l version
complete -c bbctl -n '__bbctl_in template pin' -l version
complete -c bbctl -n '__bbctl_in template remove' -l version
complete -c bbctl -n '__bbctl_in template rm' -l version
complete -c bbctl -n '__bbctl_in template rules' -l version
complete -c bbctl -n '__bbctl_in template update' -l version
complete -c bbctl -n '__bbctl_in template validate' -l arch -r
complete -c bbctl -n '__bbctl_in template validate' -l base -r
complete -c bbctl -n '__bbctl_in template validate' -l type -r
complete -c bbctl -n '__bbctl_in template validate' -l version
complete -c bbctl -n '__bbctl_in tenant create' -l cpus -r
complete -c bbctl -n '__bbctl_in tenant create' -l index -r
complete -c bbctl -n '__bbctl_in tenant create' -l machine -r
complete -c bbctl -n '__bbctl_in tenant create' -l memory -r
complete -c bbctl -n '__bbctl_in tenant create' -l network-features -r
complete -c bbctl -n '__bbctl_in tenant create' -l param -r
complete -c bbctl -n '__bbctl_in tenant create' -l stopped
complete -c bbctl -n '__bbctl_in tenant create' -l storage -r
complete -c bbctl -n '__bbctl_in tenant create' -l template -r
complete -c bbctl -n '__bbctl_in tenant create' -l version
complete -c bbctl -n '__bbctl_in tenant create' -l wait
complete -c bbctl -n '__bbctl_in tenant delete' -l force
complete -c bbctl -n '__bbctl_in tenant delete' -l revision -r
complete -c bbctl -n '__bbctl_in tenant delete' -l version
complete -c bbctl -n '__bbctl_in tenant delete' -l wait
complete -c bbctl -n '__bbctl_in tenant get' -l version
complete -c bbctl -n '__bbctl_in tenant list' -l version
complete -c bbctl -n '__bbctl_in tenant ls' -l version
complete -c bbctl -n '__bbctl_in tenant rm' -l force
complete -c bbctl -n '__bbctl_in tenant rm' -l revision -r
complete -c bbctl -n '__bbctl_in tenant rm' -l version
complete -c bbctl -n '__bbctl_in tenant rm' -l wait
complete -c bbctl -n '__bbctl_in tenant start' -l version
complete -c bbctl -n '__bbctl_in tenant start' -l wait
complete -c bbctl -n '__bbctl_in tenant stop' -l version
complete -c bbctl -n '__bbctl_in tenant stop' -l wait
complete -c bbctl -n '__bbctl_in tenant update' -l cpus -r
complete -c bbctl -n '__bbctl_in tenant update' -l machine -r
complete -c bbctl -n '__bbctl_in tenant update' -l memory -r
complete -c bbctl -n '__bbctl_in tenant update' -l network-features -r
complete -c bbctl -n '__bbctl_in tenant update' -l no-machines
complete -c bbctl -n '__bbctl_in tenant update' -l param -r
complete -c bbctl -n '__bbctl_in tenant update' -l revision -r
complete -c bbctl -n '__bbctl_in tenant update' -l storage -r
complete -c bbctl -n '__bbctl_in tenant update' -l template -r
complete -c bbctl -n '__bbctl_in tenant update' -l version
complete -c bbctl -n '__bbctl_in tenant user add' -l ssh-key -r
complete -c bbctl -n '__bbctl_in tenant user add' -l ssh-key-file -r
complete -c bbctl -n '__bbctl_in tenant user add' -l template -r
complete -c bbctl -n '__bbctl_in tenant user add' -l version
complete -c bbctl -n '__bbctl_in tenant user list' -l version
complete -c bbctl -n '__bbctl_in tenant user ls' -l version
complete -c bbctl -n '__bbctl_in tenant user remove' -l version
complete -c bbctl -n '__bbctl_in tenant user rm' -l version
complete -c bbctl -n '__bbctl_in tenant watch' -l revision -r
complete -c bbctl -n '__bbctl_in tenant watch' -l version
complete -c bbctl -n '__bbctl_in version' -l version
complete -c bbctl -l address -r -F -d 'the daemon address: unix:/path or a path'
complete -c bbctl -l json -d 'print the reply as JSON'
complete -c bbctl -l timeout -r -d 'give up after this duration'
