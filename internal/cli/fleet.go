package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/jackc/pgx/v5"
)

// fleetHost is one row of tel.fleet (migration 006_fleet.sql), and of
// `supervisor fleet --json`. Pointers are null where the view has nothing:
// a host known only from kill rows has no snapshot, a seed-era row no
// agents_tracked.
type fleetHost struct {
	Host         string         `json:"host"`
	LastSnapshot *time.Time     `json:"last_snapshot"`
	Status       *string        `json:"status"`
	Silent       bool           `json:"silent"`
	Agents       *int64         `json:"agents"`
	Zombies      *int64         `json:"zombies"`
	FreeMemMB    *int64         `json:"free_mem_mb"`
	Kills24h     map[string]int `json:"kills_24h"`
}

// errNotMigrated is a database without the view: a reader does not migrate
// (it may well be a read-only role), it says what to run.
var errNotMigrated = errors.New("the database has no view tel.fleet (its schema predates migration 006_fleet.sql): run `supervisor migrate` with an owner role, or start a daemon of this version that may")

// Fleet prints one line per host from tel.fleet. Exit status: 2 for bad
// flags or no database given, 1 when the database cannot be read, 3 with
// --fail-silent when a host is SILENT (for a cron job or a monitoring check).
func Fleet(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var asJSON, failSilent bool
	cfg, err := config.Parse("fleet", args, getenv, stdout, func(fs *flag.FlagSet) {
		config.BoolVar(fs, &asJSON, "json")
		config.BoolVar(fs, &failSilent, "fail-silent")
	})
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return 2
	}
	if cfg.DatabaseURL == "" {
		fmt.Fprintf(stderr, "supervisor: fleet: no database given (--database-url-file, --database-url, DATABASE_URL_FILE or DATABASE_URL): the fleet is what the hosts wrote to PostgreSQL\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hosts, now, err := readFleet(ctx, cfg.DatabaseURL)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: fleet: %v\n", err)
		return 1
	}
	if asJSON {
		err = writeFleetJSON(stdout, hosts)
	} else {
		err = writeFleet(stdout, hosts, now)
	}
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: fleet: %v\n", err)
		return 1
	}
	if failSilent {
		for _, h := range hosts {
			if h.Silent {
				return 3
			}
		}
	}
	return 0
}

// readFleet reads the view, and the database's clock: ages are measured
// against the clock the view's silent column used, not this machine's.
func readFleet(ctx context.Context, dsn string) ([]fleetHost, time.Time, error) {
	var now time.Time
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	fail := func(err error) ([]fleetHost, time.Time, error) {
		msg := config.RedactURL(dsn, err.Error())
		if pw := config.RawPassword(dsn); pw != "" {
			msg = strings.ReplaceAll(msg, pw, config.Masked)
		}
		return nil, now, errors.New("database: " + msg)
	}
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return fail(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(cctx, "SELECT to_regclass('tel.fleet') IS NOT NULL, now()").Scan(&exists, &now); err != nil {
		return fail(err)
	}
	if !exists {
		return nil, now, errNotMigrated
	}
	rows, err := conn.Query(cctx, `SELECT host, last_snapshot, status, silent, agents, zombies, free_mem_mb, kills_24h
		FROM tel.fleet ORDER BY host`)
	if err != nil {
		return fail(err)
	}
	hosts := []fleetHost{}
	for rows.Next() {
		var h fleetHost
		if err := rows.Scan(&h.Host, &h.LastSnapshot, &h.Status, &h.Silent, &h.Agents, &h.Zombies, &h.FreeMemMB, &h.Kills24h); err != nil {
			return fail(err)
		}
		if h.Kills24h == nil {
			h.Kills24h = map[string]int{}
		}
		hosts = append(hosts, h)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return hosts, now, nil
}

func writeFleetJSON(w io.Writer, hosts []fleetHost) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(hosts)
}

// writeFleet prints the table: one line per host, SILENT in the status
// column of a host that stopped reporting (its other columns are then from
// its last snapshot). A line fits 80 columns for host names up to about
// 14 characters and two kill reasons. Everything that came from the database is escaped
// for the terminal: any daemon's --host-id ends up here.
func writeFleet(w io.Writer, hosts []fleetHost, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSEEN\tSTATUS\tAGENTS\tZOMBIES\tFREE\tKILLS 24H")
	silent := 0
	for _, h := range hosts {
		status := "-"
		if h.Status != nil {
			status = printable(*h.Status)
		}
		if h.Silent {
			status = "SILENT"
			silent++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", printable(h.Host), seen(h.LastSnapshot, now), status,
			count(h.Agents), count(h.Zombies), memMB(h.FreeMemMB), kills(h.Kills24h))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case len(hosts) == 0:
		_, err := fmt.Fprintln(w, "(no host has written a snapshot to this database)")
		return err
	case silent > 0:
		_, err := fmt.Fprintf(w, "\n%d of %d hosts SILENT: no snapshot for more than 3 of their summary intervals\n", silent, len(hosts))
		return err
	}
	return nil
}

// seen is how long ago the last snapshot was taken, coarsely (at most 8
// characters): the SILENT mark, not the seconds, is what tells.
func seen(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	d := now.Sub(*t)
	if d < 0 {
		d = 0 // a host whose clock runs ahead of the database's
	}
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	case d >= time.Minute:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	default:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	}
}

func count(n *int64) string {
	if n == nil {
		return "-"
	}
	return fmt.Sprint(*n)
}

// memMB prints megabytes as free -h does: 812M below a GiB, else 3.9G.
func memMB(mb *int64) string {
	switch {
	case mb == nil:
		return "-"
	case *mb < 1024:
		return fmt.Sprintf("%dM", *mb)
	default:
		return fmt.Sprintf("%.1fG", float64(*mb)/1024)
	}
}

// kills prints {"max_age": 2, "leftover": 1} as "max_age 2 leftover 1",
// most first.
func kills(k map[string]int) string {
	if len(k) == 0 {
		return "-"
	}
	reasons := make([]string, 0, len(k))
	for r := range k {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if k[reasons[i]] != k[reasons[j]] {
			return k[reasons[i]] > k[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s %d", printable(r), k[r])
	}
	return strings.Join(parts, " ")
}
