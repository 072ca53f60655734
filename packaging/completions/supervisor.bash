# bash completion for supervisor(8), the agent supervisor: its subcommands and their flags.
# Generated from the commands and options tables of the source (go generate ./internal/config).
_supervisor() {
	local cur=${COMP_WORDS[COMP_CWORD]} flags
	COMPREPLY=()
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W 'run init once status health events top history fleet migrate extend keep unkeep kill reload version --help --version' -- "$cur"))
		return
	fi
	case $cur in -*) ;; *) return ;; esac
	case ${COMP_WORDS[1]} in
	run) flags='--config --max-age --kill-grace --agent --under --host-cgroup-root --leftovers --leftover-grace --keep --keep-env --summary-interval --database-url --database-url-file --host-id --db-statement-timeout --retention --spool-max-rows --state-dir --listen --metrics-listen --control-socket --control-group --api-socket --source --poll-interval --dry-run --realtime --netlink-rcvbuf --on-kill --forward-to --session-max-memory --session-max-procs --session-idle --resource-interval --pressure --pressure-file --pressure-min-age --pressure-cooldown --log-level --event-buffer --help' ;;
	init) flags='--config --max-age --kill-grace --agent --under --host-cgroup-root --leftovers --leftover-grace --keep --keep-env --summary-interval --database-url --database-url-file --host-id --db-statement-timeout --retention --spool-max-rows --state-dir --listen --metrics-listen --control-socket --control-group --api-socket --source --poll-interval --dry-run --realtime --netlink-rcvbuf --on-kill --forward-to --session-max-memory --session-max-procs --session-idle --resource-interval --pressure --pressure-file --pressure-min-age --pressure-cooldown --log-level --event-buffer --help' ;;
	once) flags='--config --max-age --kill-grace --agent --under --host-cgroup-root --leftovers --leftover-grace --keep --keep-env --summary-interval --database-url --database-url-file --host-id --db-statement-timeout --retention --spool-max-rows --state-dir --listen --metrics-listen --control-socket --control-group --api-socket --source --poll-interval --dry-run --realtime --netlink-rcvbuf --on-kill --forward-to --session-max-memory --session-max-procs --session-idle --resource-interval --pressure --pressure-file --pressure-min-age --pressure-cooldown --log-level --event-buffer --help' ;;
	status) flags='--api-socket --control-socket --help' ;;
	health) flags='--api-socket --control-socket --timeout --help' ;;
	events) flags='--json --types --api-socket --control-socket --help' ;;
	top) flags='--once --json --api-socket --control-socket --help' ;;
	history) flags='--config --max-age --kill-grace --agent --under --host-cgroup-root --leftovers --leftover-grace --keep --keep-env --summary-interval --database-url --database-url-file --host-id --db-statement-timeout --retention --spool-max-rows --state-dir --listen --metrics-listen --control-socket --control-group --api-socket --source --poll-interval --dry-run --realtime --netlink-rcvbuf --on-kill --forward-to --session-max-memory --session-max-procs --session-idle --resource-interval --pressure --pressure-file --pressure-min-age --pressure-cooldown --log-level --event-buffer --since --json --help' ;;
	fleet) flags='--config --max-age --kill-grace --agent --under --host-cgroup-root --leftovers --leftover-grace --keep --keep-env --summary-interval --database-url --database-url-file --host-id --db-statement-timeout --retention --spool-max-rows --state-dir --listen --metrics-listen --control-socket --control-group --api-socket --source --poll-interval --dry-run --realtime --netlink-rcvbuf --on-kill --forward-to --session-max-memory --session-max-procs --session-idle --resource-interval --pressure --pressure-file --pressure-min-age --pressure-cooldown --log-level --event-buffer --json --fail-silent --help' ;;
	migrate) flags='--config --max-age --kill-grace --agent --under --host-cgroup-root --leftovers --leftover-grace --keep --keep-env --summary-interval --database-url --database-url-file --host-id --db-statement-timeout --retention --spool-max-rows --state-dir --listen --metrics-listen --control-socket --control-group --api-socket --source --poll-interval --dry-run --realtime --netlink-rcvbuf --on-kill --forward-to --session-max-memory --session-max-procs --session-idle --resource-interval --pressure --pressure-file --pressure-min-age --pressure-cooldown --log-level --event-buffer --help' ;;
	extend) flags='--control-socket --until --help' ;;
	keep) flags='--control-socket --help' ;;
	unkeep) flags='--control-socket --help' ;;
	kill) flags='--control-socket --force --help' ;;
	reload) flags='--control-socket --help' ;;
	version) flags='--help' ;;
	*) return ;;
	esac
	COMPREPLY=($(compgen -W "$flags" -- "$cur"))
}
complete -o default -F _supervisor supervisor
