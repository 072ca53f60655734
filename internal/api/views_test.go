package api

import (
	"reflect"
	"strings"
	"testing"
)

// TestViewJSONNames pins the wire names of /healthz and /agents: the
// clients (status, top, the e2e tests) decode these very types, so a
// renamed field would go unnoticed by them; here it fails. A change on
// purpose changes docs/operations.md and this list together.
func TestViewJSONNames(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{HealthView{}, "status degraded source processes agents sessions session_members leftovers_pending events " +
			"events_by_type events_lost overruns resyncs bad_messages forged rcvbuf realtime_timer dry_run database " +
			"spool_rows spool_dropped spool_bad spool_held kills_in_flight kills_retrying host last_snapshot " +
			"events_per_second max_age pressure_some_avg10"},
		{AgentView{}, "pid comm cmdline started_at deadline seconds_left rule reason session_pid members exited_at " +
			"leftovers[].pid leftovers[].comm leftovers[].started_at leftovers[].kill_at leftovers[].seconds_left " +
			"leftovers[].cgroup leftovers[].container_id leftovers[].pod_uid " +
			"state attempt next_attempt cgroup container_id pod_uid " +
			"memory_bytes procs cpu_seconds cpu_percent idle_seconds kept_memory_bytes kept_procs exempt killing " +
			"member_list[].pid member_list[].ppid member_list[].comm member_list[].cmdline member_list[].started_at " +
			"member_list[].memory_bytes member_list[].kept"},
	} {
		got := strings.Join(jsonNames(reflect.TypeOf(c.v), ""), " ")
		if got != c.want {
			t.Errorf("%T's JSON names:\n%s\nwant\n%s", c.v, got, c.want)
		}
	}
}

// jsonNames lists the JSON names of struct type ty's exported fields in
// order, embedded structs inlined, a slice of structs as name[].field.
func jsonNames(ty reflect.Type, prefix string) []string {
	var out []string
	for i := range ty.NumField() {
		f := ty.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case f.Anonymous && name == "" && ft.Kind() == reflect.Struct:
			out = append(out, jsonNames(ft, prefix)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, jsonNames(ft.Elem(), prefix+name+"[].")...)
		default:
			out = append(out, prefix+name)
		}
	}
	return out
}
