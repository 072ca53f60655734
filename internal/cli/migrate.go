package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Migrate applies the embedded migrations and returns: run by an owner
// role at install or upgrade, so the daemon's own role needs no DDL
// rights (when the schema is current, `run` and `once` issue none).
func Migrate(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return errors.New("database URL: " + config.RedactURL(cfg.DatabaseURL, err.Error()))
	}
	redact := func(err error) error {
		msg := config.RedactURL(cfg.DatabaseURL, err.Error())
		if pw := pcfg.ConnConfig.Password; pw != "" {
			msg = strings.ReplaceAll(msg, pw, "[redacted]")
		}
		return errors.New("migrate: " + msg)
	}
	pcfg.MaxConns = 1
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(cctx, pcfg)
	if err != nil {
		return redact(err)
	}
	defer pool.Close()
	if err := store.NewPostgres(pool).Migrate(cctx); err != nil {
		return redact(err)
	}
	fmt.Fprintln(stdout, "schema tel is current")
	return nil
}
