// Package store keeps the daemon's rows — health snapshots for
// tel.system_health and one record per reaped agent for tel.agent_kills —
// so that none is lost.
//
// Every row is first appended to a spool file under the state directory and
// fsynced; only then is it sent to PostgreSQL, and it leaves the spool once
// the transaction that inserted it has committed. Rows carry an id chosen
// here, and inserts do nothing on a conflicting id (a kill row replaces a
// pending one), so replaying a row after a crash never duplicates it.
// Without a database the spool is the store. Damaged spool lines and rows
// the database refuses for their own fault (a data error) are set aside in
// spool.bad, never in the way of the others; any other refusal is an
// outage (Outage names its cause) and keeps every row. A disk that refuses
// a write or an fsync never loses a row either: it and the rows after it
// are held in memory, under the same bound, until WriteHeld rewrites the
// spool. LockDir makes one process the owner of a state dir.
//
// The caller owns the pgxpool.Pool. The schema is created from SQL files
// embedded in the binary, under a PostgreSQL advisory lock, so daemons on
// many hosts may start against one database at once; when it is already
// current, no DDL is issued.
package store
