package testutil

// Env is a getenv over the given KEY, VALUE pairs: the environment a
// command-line test gives the code it runs, without touching the
// process's own.
func Env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}
