-- The seed job's table, as process-reaper.js writes it. An existing table is
-- kept and only gains columns.
CREATE SCHEMA IF NOT EXISTS tel;

CREATE TABLE IF NOT EXISTS tel.system_health (
	id           bigserial PRIMARY KEY,
	check_type   text NOT NULL,
	status       text NOT NULL,
	details      jsonb,
	action_taken text,
	created_at   timestamptz NOT NULL DEFAULT now()
);

-- host: which daemon wrote the row. row_id: the daemon's id for the row, so
-- a replayed insert is a no-op. Rows written by the seed have neither.
ALTER TABLE tel.system_health ADD COLUMN IF NOT EXISTS host text;
ALTER TABLE tel.system_health ADD COLUMN IF NOT EXISTS row_id uuid;
CREATE UNIQUE INDEX IF NOT EXISTS system_health_row_id ON tel.system_health (row_id);
CREATE INDEX IF NOT EXISTS system_health_check_host_created
	ON tel.system_health (check_type, host, created_at);

CREATE TABLE IF NOT EXISTS tel.agent_kills (
	id           uuid PRIMARY KEY,
	host         text NOT NULL,
	pid          integer NOT NULL,
	comm         text NOT NULL,
	cmdline      text NOT NULL,
	rule         text NOT NULL,
	started_at   timestamptz NOT NULL,
	deadline     timestamptz NOT NULL,
	signalled_at timestamptz NOT NULL,
	exited_at    timestamptz,
	lateness_ms  double precision NOT NULL,
	final_signal text CHECK (final_signal IN ('TERM', 'KILL')),
	outcome      text NOT NULL,
	descendants  integer[] NOT NULL,
	dry_run      boolean NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS agent_kills_host_signalled ON tel.agent_kills (host, signalled_at);
