// Package termtext makes text fit for an operator's terminal: what a
// process chose (its name, its command line) with escape sequences and
// newlines shown escaped, text clipped to a column, durations in a few
// characters. It is what the clients that print (internal/cli,
// internal/top) share.
//
// It owns no state and imports only the standard library.
package termtext
