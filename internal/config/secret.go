package config

import (
	"errors"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// A database URL holds a password, and the URL arrives by flag, environment,
// --config file or --database-url-file. No message may show it: errors name
// the flag or variable and the cause, and show the URL only with its
// passwords masked, or not at all when they cannot be located for certain.

const Masked = "xxxxx"

// isURL reports whether dsn is in URL form (the rest is keyword/value).
func isURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// passwordKeys are the settings that hold a secret, in either form.
var passwordKeys = map[string]bool{"password": true, "sslpassword": true}

// kvPassword finds password settings in keyword/value form: quoted (with
// backslash escapes) or bare.
var kvPassword = regexp.MustCompile(`\b(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']\S*)`)

// dsnSecrets returns the passwords in a connection string in every form a
// message may hold them: as written, and decoded. ok is false when the
// string cannot be taken apart with certainty (it does not parse, or holds
// a '#' that would cut a password in two): then no part of it may be shown.
func dsnSecrets(dsn string) (secrets []string, ok bool) {
	if isURL(dsn) {
		u, err := url.Parse(dsn)
		if err != nil || strings.Contains(dsn, "#") {
			return nil, false
		}
		if pw, set := u.User.Password(); set {
			secrets = append(secrets, pw, RawPassword(dsn))
		}
		for _, kv := range strings.Split(u.RawQuery, "&") {
			k, v, _ := strings.Cut(kv, "=")
			if k, err := url.QueryUnescape(k); err == nil && passwordKeys[k] {
				secrets = append(secrets, v)
				if dv, err := url.QueryUnescape(v); err == nil {
					secrets = append(secrets, dv)
				}
			}
		}
	} else {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, false
		}
		secrets = append(secrets, cfg.ConnConfig.Password)
		for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
			secrets = append(secrets, m[1], strings.Trim(m[1], "'"))
		}
	}
	// pgx falls back to PGPASSWORD when the string holds none.
	secrets = append(secrets, os.Getenv("PGPASSWORD"))
	out := secrets[:0]
	for _, s := range secrets {
		if s != "" {
			out = append(out, s)
		}
	}
	// Longest first, so a password containing another is masked whole.
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, true
}

// RawPassword is the userinfo password of a URL as written, before
// percent-decoding: what lies after the first ':' of the text before the
// authority's last '@'.
func RawPassword(dsn string) string {
	rest := dsn[strings.Index(dsn, "://")+3:]
	rest, _, _ = strings.Cut(rest, "?")
	authority, _, _ := strings.Cut(rest, "/")
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(authority[:at], ":")
	return pw
}

// redactDSN returns dsn with its passwords masked, or "" when they cannot
// be located.
func redactDSN(dsn string) string {
	if _, ok := dsnSecrets(dsn); !ok {
		return ""
	}
	if !isURL(dsn) {
		return kvPassword.ReplaceAllStringFunc(dsn, func(m string) string {
			k, _, _ := strings.Cut(m, "=")
			return k + "=" + Masked
		})
	}
	u, _ := url.Parse(dsn)
	if _, set := u.User.Password(); set {
		u.User = url.UserPassword(u.User.Username(), Masked)
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, kv := range parts {
			k, _, _ := strings.Cut(kv, "=")
			if dk, err := url.QueryUnescape(k); err == nil && passwordKeys[dk] {
				parts[i] = k + "=" + Masked
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	return u.String()
}

// quoted matches the quoted parts of an error message: where Go's and pgx's
// errors put the pieces of the input they complain about.
var quoted = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|`[^`]*`")

// RedactURL removes a database URL's passwords from msg. When they cannot
// be located, every quoted part of msg (where errors quote their input) is
// removed instead.
func RedactURL(dsn, msg string) string {
	secrets, ok := dsnSecrets(dsn)
	if !ok {
		return quoted.ReplaceAllString(msg, "…")
	}
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, Masked)
	}
	return msg
}

// checkDSN parses a database URL as the daemon will; its error shows the
// URL only with the password masked, or not at all.
func checkDSN(dsn string) error {
	if isURL(dsn) && strings.Contains(dsn, "#") {
		// url.Parse would take the rest as a fragment, and pgx would
		// silently connect with half a password.
		return errors.New("invalid PostgreSQL URL (not shown: it may hold a password): it contains '#'; write a '#' in a password as %23")
	}
	_, err := pgxpool.ParseConfig(dsn)
	if err == nil {
		return nil
	}
	cause := err.Error()
	if strings.HasPrefix(cause, "cannot parse `") {
		if i := strings.Index(cause, "`: "); i >= 0 {
			cause = cause[i+3:] // pgx repeats the string first
		}
	}
	cause = RedactURL(dsn, cause)
	if shown := redactDSN(dsn); shown != "" {
		return errors.New("invalid PostgreSQL URL " + shown + ": " + cause)
	}
	return errors.New("invalid PostgreSQL URL (not shown: it may hold a password): " + cause)
}

// readSecretFile reads a database URL from a file: one line, trimmed.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err // names the file, never its content
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", errors.New(path + " is empty")
	}
	return v, nil
}

// ScrubArg hides a command-line argument that looks like a connection
// string before it is quoted in an error.
func ScrubArg(s string) string {
	if !strings.Contains(s, "@") && !strings.Contains(s, "password") {
		return s
	}
	if r := redactDSN(s); r != "" && (isURL(s) || strings.Contains(s, "=")) {
		return r
	}
	return "(not shown: it may hold a password)"
}
