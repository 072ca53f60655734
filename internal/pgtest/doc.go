// Package pgtest gives tests a real PostgreSQL database of their own: an
// empty database on the server at TEST_DATABASE_URL, dropped when the test
// ends. Without the variable a test skips, saying what is missing; under CI
// (CI set) it fails instead, since scripts/test always provides a server.
//
// Only tests import it. It imports pgx and the standard library, nothing of
// this module.
package pgtest
