// Package archtest holds no code, only tests of the house rules the
// project's layout keeps (docs/design.md, "The house rules"): data flows
// one way, kernel → procevents → tracker → policies → reap, and everything
// into the sinks (store, metrics, events); no package imports one further
// down that flow (the sinks sit low and import nothing of it but what they
// record); every package has a doc.go; no type has methods in more than
// three files (a type spread wider is a hub); cmd/supervisor stays an
// entry point; README's Layout names every package. A change that breaks a
// rule fails here, with the rule named.
package archtest
