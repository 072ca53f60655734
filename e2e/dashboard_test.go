package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
	"github.com/jackc/pgx/v5"
)

// dashboardPath is the Grafana dashboard shipped in deploy/grafana.
var dashboardPath = filepath.Join("..", "deploy", "grafana", "supervisor.json")

// dashQuery is one query of the dashboard: PromQL (expr, or a variable's
// label_values) or SQL (rawSql, with its format).
type dashQuery struct {
	where  string // panel title and refId, for messages
	promQL string
	sql    string
	format string // table or time_series, for SQL
}

// dashboardQueries walks the whole dashboard (panels, rows' panels,
// variables) and returns every query in it. It also checks that each query
// names one of the dashboard's datasource variables of the right type.
func dashboardQueries(t *testing.T, raw []byte) []dashQuery {
	t.Helper()
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if v, _ := dash["schemaVersion"].(float64); v < 39 {
		t.Errorf("schemaVersion %v: want a current Grafana's (39 or later)", dash["schemaVersion"])
	}
	vars := map[string]string{} // variable name -> datasource type it selects
	tmpl, _ := dash["templating"].(map[string]any)
	list, _ := tmpl["list"].([]any)
	var out []dashQuery
	for _, v := range list {
		v := v.(map[string]any)
		name, _ := v["name"].(string)
		switch v["type"] {
		case "datasource":
			vars["${"+name+"}"], _ = v["query"].(string)
		case "query":
			q := v["query"]
			if m, ok := q.(map[string]any); ok {
				q = m["query"]
			}
			s, _ := q.(string)
			out = append(out, dashQuery{where: "variable " + name, promQL: s})
		}
	}
	if vars["${prometheus}"] != "prometheus" || vars["${postgres}"] != "grafana-postgresql-datasource" {
		t.Errorf("datasource variables %v: want prometheus and postgres", vars)
	}
	ids := map[float64]string{}
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			p := p.(map[string]any)
			title, _ := p["title"].(string)
			if id, ok := p["id"].(float64); !ok {
				t.Errorf("panel %q has no id", title)
			} else if other, dup := ids[id]; dup {
				t.Errorf("panels %q and %q share id %v", title, other, id)
			} else {
				ids[id] = title
			}
			if sub, ok := p["panels"].([]any); ok {
				walk(sub)
			}
			targets, _ := p["targets"].([]any)
			for _, tg := range targets {
				tg := tg.(map[string]any)
				ds, _ := tg["datasource"].(map[string]any)
				if ds == nil {
					ds, _ = p["datasource"].(map[string]any)
				}
				uid, _ := ds["uid"].(string)
				typ, _ := ds["type"].(string)
				where := fmt.Sprintf("panel %q, query %v", title, tg["refId"])
				if vars[uid] == "" || vars[uid] != typ {
					t.Errorf("%s: datasource %v is not one of the dashboard's datasource variables", where, ds)
				}
				expr, isProm := tg["expr"].(string)
				rawSQL, isSQL := tg["rawSql"].(string)
				switch {
				case isProm && typ == "prometheus":
					out = append(out, dashQuery{where: where, promQL: expr})
				case isSQL && typ == "grafana-postgresql-datasource":
					format, _ := tg["format"].(string)
					out = append(out, dashQuery{where: where, sql: rawSQL, format: format})
				default:
					t.Errorf("%s: neither PromQL on Prometheus nor SQL on PostgreSQL", where)
				}
			}
		}
	}
	panels, _ := dash["panels"].([]any)
	walk(panels)
	return out
}

// promFunctions are PromQL's functions and aggregation operators: an
// identifier that is one of them is not a metric. (Grafana's label_values
// is handled by the caller.)
var promFunctions = map[string]bool{}

func init() {
	for _, f := range strings.Fields(`abs absent absent_over_time acos acosh asin asinh atan atanh avg avg_over_time
		bottomk ceil changes clamp clamp_max clamp_min cos cosh count count_over_time count_values day_of_month
		day_of_week day_of_year days_in_month deg delta deriv exp floor group histogram_avg histogram_count
		histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour
		idelta increase irate label_join label_replace last_over_time limitk limit_ratio ln log10 log2 mad_over_time
		max max_over_time min min_over_time minute month pi predict_linear present_over_time quantile
		quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc
		sqrt stddev stddev_over_time stdvar stdvar_over_time sum sum_over_time tan tanh time timestamp topk vector year`) {
		promFunctions[f] = true
	}
}

// promKeywords are PromQL's other words; those that take a label list in
// parentheses have true.
var promKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "bool": false, "and": false, "or": false, "unless": false, "offset": false, "atan2": false,
	"inf": false, "nan": false}

// promNames returns the metric names a PromQL expression selects: the
// identifiers that are not functions, keywords, label names (inside {} or
// after by/without/on/ignoring/group_*), strings, numbers, durations or
// Grafana variables ($x, ${x}). An unknown function is an error.
func promNames(expr string) ([]string, error) {
	var names []string
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	// skipTo returns the index just past the close matching the open
	// bracket at i, stepping over quoted strings.
	skipTo := func(i int, open, close byte) (int, error) {
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; c {
			case '"', '\'', '`':
				k := j + 1
				for ; k < len(expr) && expr[k] != c; k++ {
					if expr[k] == '\\' && c != '`' {
						k++
					}
				}
				j = k
			case open:
				depth++
			case close:
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c at %d", open, i)
	}
	nextNonSpace := func(i int) byte {
		for ; i < len(expr); i++ {
			if expr[i] != ' ' && expr[i] != '\t' && expr[i] != '\n' {
				return expr[i]
			}
		}
		return 0
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		var err error
		switch {
		case c == '{':
			i, err = skipTo(i, '{', '}') // label matchers
		case c == '[':
			i, err = skipTo(i, '[', ']') // a range or subquery
		case c == '"' || c == '\'' || c == '`':
			k := i + 1
			for ; k < len(expr) && expr[k] != c; k++ {
				if expr[k] == '\\' && c != '`' {
					k++
				}
			}
			if k >= len(expr) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			i = k + 1
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				i, err = skipTo(i, '{', '}')
			} else {
				for i < len(expr) && isIdent(expr[i], false) {
					i++
				}
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.') {
				i++ // a number or a duration (5m, 1e3)
			}
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			id := expr[i:j]
			i = j
			takesLabels, keyword := promKeywords[strings.ToLower(id)]
			switch {
			case keyword && takesLabels && nextNonSpace(i) == '(':
				i = strings.IndexByte(expr[i:], '(') + i
				i, err = skipTo(i, '(', ')')
			case keyword || promFunctions[id]:
			case nextNonSpace(i) == '(':
				return nil, fmt.Errorf("unknown function %s", id)
			default:
				names = append(names, id)
			}
		default:
			i++
		}
		if err != nil {
			return nil, err
		}
	}
	return names, nil
}

// labelValuesMetric returns the expression inside Grafana's
// label_values(EXPR, label), or q itself.
func labelValuesMetric(q string) string {
	q = strings.TrimSpace(q)
	if !strings.HasPrefix(q, "label_values(") || !strings.HasSuffix(q, ")") {
		return q
	}
	inner := q[len("label_values(") : len(q)-1]
	if k := strings.LastIndexByte(inner, ','); k >= 0 {
		return inner[:k]
	}
	return "" // label_values(label): no metric
}

// metricTypes reads a Prometheus text exposition: family name -> type.
func metricTypes(r io.Reader) (map[string]string, error) {
	types := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		}
	}
	return types, sc.Err()
}

// missingMetrics returns the names that no family exposes; a histogram's
// _bucket, _sum and _count (a summary's _sum and _count) are its own.
func missingMetrics(names []string, types map[string]string) []string {
	var missing []string
	for _, n := range names {
		if types[n] != "" {
			continue
		}
		if base, ok := strings.CutSuffix(n, "_bucket"); ok && types[base] == "histogram" {
			continue
		}
		base, ok := strings.CutSuffix(n, "_sum")
		if !ok {
			base, ok = strings.CutSuffix(n, "_count")
		}
		if ok && (types[base] == "histogram" || types[base] == "summary") {
			continue
		}
		missing = append(missing, n)
	}
	return missing
}

// grafanaMacros replaces the PostgreSQL datasource's macros with SQL they
// expand to over [from, to] and a 1 minute interval. A macro it does not
// know stays, and the test then fails on it.
func grafanaMacros(sql string, from, to time.Time) string {
	ts := func(t time.Time) string { return "'" + t.UTC().Format(time.RFC3339) + "'" }
	call := func(name string) *regexp.Regexp {
		return regexp.MustCompile(`\$__` + name + `\(\s*([^,()]+?)\s*(?:,\s*([^()]*?)\s*)?\)`)
	}
	sql = call("timeFilter").ReplaceAllString(sql, "$1 BETWEEN "+ts(from)+" AND "+ts(to))
	sql = call("timeGroupAlias").ReplaceAllString(sql, `floor(extract(epoch FROM $1)/60)*60 AS "time"`)
	sql = call("timeGroup").ReplaceAllString(sql, `floor(extract(epoch FROM $1)/60)*60`)
	sql = call("unixEpochFilter").ReplaceAllString(sql, fmt.Sprintf("$1 >= %d AND $1 <= %d", from.Unix(), to.Unix()))
	sql = strings.NewReplacer("$__timeFrom()", ts(from), "$__timeTo()", ts(to),
		"$__interval_ms", "60000", "$__interval", "1m").Replace(sql)
	return sql
}

// TestDashboardPromNames: the tokenizer finds the metric names and nothing
// else, and a dashboard naming a metric the daemon lacks is caught.
func TestDashboardPromNames(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (instance, type) (rate(supervisor_events_total{instance=~"$instance"}[$__rate_interval]))`: "supervisor_events_total",
		`histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="b,}c", d='e'}[5m])))`:                      "x_bucket",
		`max by (instance) (process_resident_memory_bytes{i=~"${i}"}) and on (instance) a:b_c`:             "process_resident_memory_bytes a:b_c",
		`time() - max without (job) (m offset 5m) > bool 1e3`:                                              "m",
		`sum(rate(s_sum[1m])) / ignoring (x) group_left (y) sum(rate(s_count[1m]))`:                        "s_sum s_count",
		`vector(1)`: "",
	} {
		got, err := promNames(expr)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("%s: %q %v, want %q", expr, got, err, want)
		}
	}
	if _, err := promNames(`histogram_quantil(0.5, m)`); err == nil {
		t.Error("a misspelt function is not an error")
	}
	if got := labelValuesMetric("label_values(supervisor_agents_tracked{job=\"x\"}, instance)"); got != `supervisor_agents_tracked{job="x"}` {
		t.Errorf("label_values: %q", got)
	}
	types := map[string]string{"h": "histogram", "s": "summary", "c_total": "counter"}
	if got := missingMetrics([]string{"h_bucket", "h_sum", "h_count", "s_sum", "c_total", "s_bucket", "c", "nope"}, types); strings.Join(got, " ") != "s_bucket c nope" {
		t.Errorf("missing %q, want s_bucket c nope", got)
	}
	from, to := time.Unix(1000, 0), time.Unix(2000, 0)
	got := grafanaMacros(`SELECT $__timeGroupAlias(t, $__interval), x FROM y WHERE $__timeFilter(t) AND $__unixEpochFilter(e) LIMIT $__interval_ms`, from, to)
	want := `SELECT floor(extract(epoch FROM t)/60)*60 AS "time", x FROM y WHERE t BETWEEN '1970-01-01T00:16:40Z' AND '1970-01-01T00:33:20Z' AND e >= 1000 AND e <= 2000 LIMIT 60000`
	if got != want {
		t.Errorf("macros:\n got %s\nwant %s", got, want)
	}
}

// TestIntegrationDashboard: every metric the dashboard's PromQL names is on
// a live daemon's /metrics (with a database, after its first snapshot),
// and every SQL query runs against a migrated database holding a host's
// snapshots and a kill, returns rows, and a time series query has a time
// column.
func TestIntegrationDashboard(t *testing.T) {
	raw := readFile(t, dashboardPath)
	queries := dashboardQueries(t, raw)
	if ranApart(t) { // the file alone checked here; all of it there
		return
	}
	db := testDatabase(t)
	if _, errs, code := runCLI(t, "migrate", "--database-url", db); code != 0 {
		t.Fatalf("migrate: %s", errs)
	}
	host := testutil.RandName("dash-")
	d := startDaemon(t, "--database-url", db, "--host-id", host, "--max-age", "1h")
	d.waitLog(t, 30*time.Second, func(m map[string]any) bool { return m["msg"] == "snapshot" })

	types, err := metricTypes(strings.NewReader(scrape(t, d)))
	if err != nil {
		t.Fatal(err)
	}

	conn := dbConn(t, db)
	ctx := context.Background()
	if waitCount(t, conn, 30*time.Second, 1, "SELECT count(*) FROM tel.system_health WHERE host = $1", host) < 1 {
		t.Fatal("the daemon wrote no snapshot to the database")
	}
	if _, err := conn.Exec(ctx, `INSERT INTO tel.agent_kills (id, host, pid, comm, cmdline, rule, started_at, deadline,
		signalled_at, lateness_ms, outcome, descendants, dry_run, reason)
		VALUES (gen_random_uuid(), $1, 42, 'claude', 'claude', 'claude', now() - interval '2 hours', now() - interval '1 minute',
		now() - interval '1 minute', 0.2, 'terminated', '{43}', false, 'max_age')`, host); err != nil {
		t.Fatal(err)
	}
	from, to := time.Now().Add(-24*time.Hour), time.Now().Add(time.Minute)

	var nProm, nSQL int
	for _, q := range queries {
		if q.sql == "" {
			names, err := promNames(labelValuesMetric(q.promQL))
			if err != nil {
				t.Errorf("%s: %v: %s", q.where, err, q.promQL)
				continue
			}
			if len(names) == 0 {
				t.Errorf("%s: no metric in %s", q.where, q.promQL)
			}
			if missing := missingMetrics(names, types); len(missing) > 0 {
				t.Errorf("%s: %v not on the daemon's /metrics: %s", q.where, missing, q.promQL)
			}
			nProm++
			continue
		}
		nSQL++
		sql := grafanaMacros(q.sql, from, to)
		if strings.Contains(sql, "$") {
			t.Errorf("%s: a Grafana macro or variable this test does not expand: %s", q.where, sql)
			continue
		}
		cols, n, err := runReadOnly(ctx, conn, sql)
		if err != nil {
			t.Errorf("%s: %v\n%s", q.where, err, sql)
			continue
		}
		if n == 0 {
			t.Errorf("%s: no rows over a database with a host's snapshots and a kill:\n%s", q.where, sql)
		}
		if q.format == "time_series" && !contains(cols, "time") {
			t.Errorf("%s: a time series query without a time column (%v)", q.where, cols)
		}
	}
	if nProm < 10 || nSQL < 4 {
		t.Errorf("%d PromQL and %d SQL queries found: the walk missed some", nProm, nSQL)
	}
	t.Logf("%d PromQL and %d SQL queries checked against %d metric families", nProm, nSQL, len(types))
}

// runReadOnly runs sql in a read-only transaction and returns its column
// names and how many rows it gave.
func runReadOnly(ctx context.Context, conn *pgx.Conn, sql string) ([]string, int, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, sql)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var cols []string
	for _, f := range rows.FieldDescriptions() {
		cols = append(cols, f.Name)
	}
	n := 0
	for rows.Next() {
		if _, err := rows.Values(); err != nil {
			return cols, n, err
		}
		n++
	}
	return cols, n, rows.Err()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestDeployProbeCommand runs the DaemonSet's probe command (an exec of
// supervisor health) through the supervisor binary: it must
// parse, say "no daemon" (exit 1) when nothing listens on the socket it
// names, and answer 0 from a ready daemon on that socket. (The deploy
// module's test checks the socket is the daemon's and the binary the
// image's.)
func TestDeployProbeCommand(t *testing.T) {
	b := readFile(t, filepath.Join("..", "deploy", "kubernetes", "30-daemonset.yaml"))
	// The probes' flow sequences, `command: ["...", ...]`, are JSON.
	var cmds [][]string
	for _, m := range regexp.MustCompile(`(?m)^\s+command:\s*(\[.*\])\s*$`).FindAllStringSubmatch(string(b), -1) {
		var c []string
		if err := json.Unmarshal([]byte(m[1]), &c); err != nil {
			t.Fatalf("probe command %s: %v", m[1], err)
		}
		cmds = append(cmds, c)
	}
	if len(cmds) != 2 {
		t.Fatalf("found %d exec probe commands in 30-daemonset.yaml, want 2 (liveness, readiness) as `command: [...]`", len(cmds))
	}
	// with runs the command's arguments with its socket replaced by sock.
	with := func(c []string, sock string) (int, string, string) {
		args := slices.Clone(c[1:])
		i := slices.Index(args, "--api-socket")
		if i < 0 || i+1 >= len(args) || args[0] != "health" {
			t.Fatalf("probe command %q: want supervisor health --api-socket PATH ...", c)
		}
		args[i+1] = sock
		// As the kubelet runs it: nothing from this environment.
		cmd := exec.Command(supervisorBin, args...)
		cmd.Env = []string{}
		out, errs, code := runCmd(t, cmd)
		return code, out, errs
	}
	none := filepath.Join(t.TempDir(), "api.sock")
	for _, c := range cmds {
		if filepath.Base(c[0]) != "supervisor" {
			t.Errorf("probe command %q: want the supervisor binary", c)
		}
		if code, _, errs := with(c, none); code != 1 || !strings.Contains(errs, "no daemon answers on "+none) {
			t.Errorf("probe %q with no daemon: exit %d %q, want 1 and no daemon", c, code, errs)
		}
	}
	if ranApart(t) { // the commands without a daemon checked here; all of it there
		return
	}
	d := startDaemon(t, "--max-age", "1h")
	for _, c := range cmds {
		code, out, errs := with(c, d.api)
		var h healthView
		if code != 0 || json.Unmarshal([]byte(out), &h) != nil || h.Status != "ok" {
			t.Errorf("probe %q on a ready daemon: exit %d, stdout %q, stderr %q; want 0 and its /healthz", c, code, out, errs)
		}
	}
}
