package deploy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The manifests' fixed points.
const (
	namespace   = "agent-supervisor"
	stateDirKey = "REAPER_STATE_DIR"
)

// capabilities are exactly what the daemon needs (docs/deployment.md "Running on
// Kubernetes" says what for).
var capabilities = []string{"DAC_READ_SEARCH", "KILL", "NET_ADMIN", "SYS_NICE", "SYS_PTRACE"}

// notDaemonEnv are the DaemonSet's environment variables that are not the
// daemon's settings: inputs of $(VAR) expansion and the Go runtime's.
var notDaemonEnv = map[string]bool{"NODE_IP": true, "GOMEMLIMIT": true}

// object is one decoded manifest document.
type object struct {
	file string
	obj  any
}

// apiTypes makes an empty object of the API type of an "apiVersion kind".
var apiTypes = map[string]func() any{
	"v1 Namespace":      func() any { return &corev1.Namespace{} },
	"v1 ServiceAccount": func() any { return &corev1.ServiceAccount{} },
	"v1 ConfigMap":      func() any { return &corev1.ConfigMap{} },
	"v1 Secret":         func() any { return &corev1.Secret{} },
	"v1 ResourceQuota":  func() any { return &corev1.ResourceQuota{} },
	"apps/v1 DaemonSet": func() any { return &appsv1.DaemonSet{} },
}

// newObject returns an empty object of the API type for apiVersion and kind.
func newObject(apiVersion, kind string) (any, error) {
	if zero, ok := apiTypes[apiVersion+" "+kind]; ok {
		return zero(), nil
	}
	return nil, fmt.Errorf("unknown kind %q of apiVersion %q: add its API type to the test", kind, apiVersion)
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeStrict decodes every document of a manifest file into its API type;
// a field the type does not have is an error.
func decodeStrict(file string, b []byte) ([]object, error) {
	var out []object
	for i, doc := range docSep.Split(string(b), -1) {
		if !hasContent(doc) {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i+1, err)
		}
		obj, err := newObject(tm.APIVersion, tm.Kind)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i+1, err)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", file, i+1, tm.Kind, err)
		}
		// yaml.UnmarshalStrict decodes with encoding/json, which matches
		// field names case-insensitively: hostPid would pass for hostPID,
		// and the API server would then drop it. Kubernetes decodes case-
		// sensitively (sigs.k8s.io/json); so does this second pass.
		j, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", file, i+1, tm.Kind, err)
		}
		strict, err := kjson.UnmarshalStrict(j, obj)
		if err == nil {
			err = errors.Join(strict...)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", file, i+1, tm.Kind, err)
		}
		out = append(out, object{file, obj})
	}
	return out, nil
}

// hasContent: a document of comments and blank lines alone is no object.
func hasContent(doc string) bool {
	for _, l := range strings.Split(doc, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return true
		}
	}
	return false
}

// manifests decodes every YAML file under kubernetes/, examples included.
func manifests(t *testing.T) []object {
	t.Helper()
	var files []string
	err := filepath.WalkDir("kubernetes", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no manifests under kubernetes/")
	}
	var objs []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		o, err := decodeStrict(f, b)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	return objs
}

// one returns the single object of type T, failing unless there is exactly one.
func one[T any](t *testing.T, objs []object) (T, string) {
	t.Helper()
	var found []object
	for _, o := range objs {
		if _, ok := o.obj.(T); ok {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, found %d", zero, len(found))
	}
	return found[0].obj.(T), found[0].file
}

func TestDecodeStrictRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndatta: {}\n",
		"unknown kind":  "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
		"nested field":  "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec: {template: {spec: {hostPid: true}}}\n",
		"duplicate key": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n",
	} {
		if _, err := decodeStrict(name, []byte(doc)); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
	objs, err := decodeStrict("two", []byte("# c\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n"))
	if err != nil || len(objs) != 2 {
		t.Errorf("two documents: %d objects, %v", len(objs), err)
	}
}

// parseConf reads the daemon's KEY=VALUE config file format (cmd/supervisor
// readConfigFile): blank lines and # comments skipped, "export " allowed,
// one pair of matching quotes around a value removed.
func parseConf(text string) (map[string]string, error) {
	out := map[string]string{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want KEY=VALUE", i+1)
		}
		k = strings.TrimSpace(strings.TrimPrefix(k, "export "))
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("line %d: %s given twice", i+1, k)
		}
		out[k] = v
	}
	return out, nil
}

// knownVars are the variables docs/configuration.md's table documents (it
// is the authoritative list of the daemon's settings), plus the seed's
// minutes variable.
func knownVars(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	known := map[string]bool{"REAPER_MAX_AGENT_AGE_MINUTES": true}
	in := false
	tick := regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "# Configuration" || l == "## Configuration":
			in = true
		case strings.HasPrefix(l, "## "):
			in = false
		case in && strings.HasPrefix(l, "|"):
			cells := strings.Split(l, "|")
			if len(cells) > 2 {
				for _, m := range tick.FindAllStringSubmatch(cells[2], -1) { // the env column
					known[m[1]] = true
				}
			}
		}
	}
	if len(known) < 20 {
		t.Fatalf("found only %d variables in docs/configuration.md's table: has its layout changed?", len(known))
	}
	return known
}

// envOf returns the container's environment variable name.
func envOf(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// mountFor returns the volume mounted at the directory holding file, and
// the file's name in it.
func mountFor(t *testing.T, ps corev1.PodSpec, c corev1.Container, file string) (corev1.Volume, corev1.VolumeMount, string) {
	t.Helper()
	dir, base := path.Split(file)
	dir = strings.TrimSuffix(dir, "/")
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			for _, v := range ps.Volumes {
				if v.Name == m.Name {
					return v, m, base
				}
			}
			t.Fatalf("volume mount %s names no volume %q", dir, m.Name)
		}
	}
	t.Fatalf("nothing is mounted at %s (for %s)", dir, file)
	return corev1.Volume{}, corev1.VolumeMount{}, ""
}

func TestManifests(t *testing.T) {
	objs := manifests(t)
	ds, dsFile := one[*appsv1.DaemonSet](t, objs)
	cm, _ := one[*corev1.ConfigMap](t, objs)
	sa, _ := one[*corev1.ServiceAccount](t, objs)
	ns, _ := one[*corev1.Namespace](t, objs)
	secret, _ := one[*corev1.Secret](t, objs)

	// Everything in one namespace, which admits what the DaemonSet needs.
	if ns.Name != namespace || ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace %q labels %v: want %s with pod-security enforce=privileged (hostPID, hostNetwork, hostPath)", ns.Name, ns.Labels, namespace)
	}
	for _, o := range objs {
		if m, ok := o.obj.(metav1.Object); ok {
			if _, isNS := o.obj.(*corev1.Namespace); !isNS && m.GetNamespace() != namespace {
				t.Errorf("%s: %s in namespace %q, want %q", o.file, m.GetName(), m.GetNamespace(), namespace)
			}
		}
	}

	ps := ds.Spec.Template.Spec
	if ps.HostUsers != nil && !*ps.HostUsers {
		t.Errorf("%s: hostUsers false: the proc connector answers only in the initial user namespace", dsFile)
	}
	if !ps.HostPID || !ps.HostNetwork {
		t.Errorf("%s: hostPID %v hostNetwork %v: the proc connector needs both", dsFile, ps.HostPID, ps.HostNetwork)
	}
	if ps.ServiceAccountName != sa.Name {
		t.Errorf("serviceAccountName %q, want %q", ps.ServiceAccountName, sa.Name)
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken ||
		ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Error("the daemon never calls the API: automountServiceAccountToken must be false on the account and the pod")
	}
	// Where critical priority classes need a quota in the namespace, the
	// quota must name the DaemonSet's class.
	rq, _ := one[*corev1.ResourceQuota](t, objs)
	if sel := rq.Spec.ScopeSelector; sel == nil || len(sel.MatchExpressions) != 1 ||
		sel.MatchExpressions[0].ScopeName != corev1.ResourceQuotaScopePriorityClass ||
		!slices.Contains(sel.MatchExpressions[0].Values, ps.PriorityClassName) {
		t.Errorf("ResourceQuota %s must be scoped to the priority class %q: %+v", rq.Name, ps.PriorityClassName, rq.Spec.ScopeSelector)
	}
	if ps.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", ps.PriorityClassName)
	}
	if !slices.ContainsFunc(ps.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
	}) {
		t.Errorf("tolerations %v: want one tolerating every taint (operator Exists, no key, no effect)", ps.Tolerations)
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(ps.Containers))
	}
	c := ps.Containers[0]

	// The security context: exactly the five capabilities, nothing more.
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("the container has no securityContext")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("privileged must be set to false")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be set to false")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser must be 0")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.Capabilities == nil {
		t.Fatal("no capabilities")
	}
	if len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("capabilities drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	sort.Strings(add)
	if !slices.Equal(add, capabilities) {
		t.Errorf("capabilities add %v, want exactly %v", add, capabilities)
	}
	if ps.SecurityContext != nil && ps.SecurityContext.RunAsNonRoot != nil && *ps.SecurityContext.RunAsNonRoot {
		t.Error("pod runAsNonRoot contradicts runAsUser 0")
	}

	// The config file: the ConfigMap's key, mounted where REAPER_CONFIG says.
	cfgEnv := envOf(c, "REAPER_CONFIG")
	if cfgEnv == nil || cfgEnv.Value == "" {
		t.Fatal("REAPER_CONFIG is not set: the ConfigMap's file is not read")
	}
	vol, _, key := mountFor(t, ps, c, cfgEnv.Value)
	if vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Name {
		t.Fatalf("%s is not on the ConfigMap %q", cfgEnv.Value, cm.Name)
	}
	text, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %q", cm.Name, key)
	}
	conf, err := parseConf(text)
	if err != nil {
		t.Fatalf("ConfigMap %s %s: %v", cm.Name, key, err)
	}
	known := knownVars(t)
	for k := range conf {
		if !known[k] {
			t.Errorf("ConfigMap %s: %s is not a variable docs/configuration.md documents (the daemon refuses unknown ones)", cm.Name, k)
		}
	}
	if got := conf["REAPER_UNDER"]; got != "cgroup:/kubepods*" {
		t.Errorf("REAPER_UNDER=%q, want cgroup:/kubepods* (only processes in pods)", got)
	}
	if _, ok := conf["DATABASE_URL"]; ok {
		t.Error("the ConfigMap holds DATABASE_URL: the URL belongs in the Secret, through DATABASE_URL_FILE")
	}

	// The environment: the daemon's variables there win over the file, so
	// the ConfigMap must not set the same ones; all must be known.
	for _, e := range c.Env {
		if notDaemonEnv[e.Name] {
			continue
		}
		if !known[e.Name] {
			t.Errorf("env %s is not a variable of the daemon", e.Name)
		}
		if _, dup := conf[e.Name]; dup {
			t.Errorf("%s is set in the environment and in the ConfigMap: the environment wins, the file's line is dead", e.Name)
		}
		if e.Name == "DATABASE_URL" {
			t.Error("DATABASE_URL in the environment: use the Secret file")
		}
	}
	host := envOf(c, "REAPER_HOST_ID")
	if host == nil || host.ValueFrom == nil || host.ValueFrom.FieldRef == nil || host.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("REAPER_HOST_ID must come from the downward API's spec.nodeName: %+v", host)
	}

	// State on the node: a hostPath at the state dir the config names.
	stateDir := conf[stateDirKey]
	if stateDir == "" {
		t.Fatalf("the ConfigMap does not set %s", stateDirKey)
	}
	sv := volumeAt(t, ps, c, stateDir)
	if sv.HostPath == nil {
		t.Errorf("the state dir %s is on volume %q, which is not a hostPath: the spool would not survive the pod", stateDir, sv.Name)
	}

	// The node's cgroup hierarchy, for a daemon in its own cgroup
	// namespace: a read-only hostPath of /sys/fs/cgroup where
	// REAPER_HOST_CGROUP_ROOT says, not over the container's own
	// /sys/fs/cgroup (the health snapshot reads the daemon's memory limit
	// there, by the path the daemon's namespace gives it).
	hostCg := conf["REAPER_HOST_CGROUP_ROOT"]
	if hostCg == "" || path.Clean(hostCg) == "/sys/fs/cgroup" {
		t.Fatalf("REAPER_HOST_CGROUP_ROOT=%q: want the node's /sys/fs/cgroup mounted elsewhere (the container has a cgroup namespace of its own)", hostCg)
	}
	cv := volumeAt(t, ps, c, hostCg)
	if cv.HostPath == nil || path.Clean(cv.HostPath.Path) != "/sys/fs/cgroup" {
		t.Errorf("REAPER_HOST_CGROUP_ROOT=%s is on volume %q, not a hostPath of /sys/fs/cgroup", hostCg, cv.Name)
	}
	for _, m := range c.VolumeMounts {
		if m.Name == cv.Name && !m.ReadOnly {
			t.Errorf("the node's cgroup hierarchy is mounted writable at %s: the daemon only reads it", m.MountPath)
		}
		if path.Clean(m.MountPath) == "/sys/fs/cgroup" || strings.HasPrefix(path.Clean(m.MountPath), "/sys/fs/cgroup/") {
			t.Errorf("volume %q is mounted over the container's own /sys/fs/cgroup", m.Name)
		}
	}

	// The database URL: a Secret file that DATABASE_URL_FILE names.
	urlFile := conf["DATABASE_URL_FILE"]
	if urlFile == "" {
		t.Fatal("the ConfigMap does not set DATABASE_URL_FILE")
	}
	dv, _, dkey := mountFor(t, ps, c, urlFile)
	if dv.Secret == nil {
		t.Fatalf("%s is on volume %q, not a Secret", urlFile, dv.Name)
	}
	if dv.Secret.SecretName != secret.Name {
		t.Errorf("the database volume mounts Secret %q; the example Secret is %q", dv.Secret.SecretName, secret.Name)
	}
	if _, ok := secret.StringData[dkey]; !ok {
		if _, ok := secret.Data[dkey]; !ok {
			t.Errorf("the example Secret has no key %q (DATABASE_URL_FILE=%s)", dkey, urlFile)
		}
	}
	if m := dv.Secret.DefaultMode; m == nil || *m&0o077 != 0 {
		t.Errorf("the Secret's files must be readable by their owner only (defaultMode 0400 or 0600)")
	}
	for _, v := range secret.StringData {
		if !strings.Contains(v, "CHANGE-ME") {
			t.Errorf("the example Secret must hold a placeholder password (CHANGE-ME), not a real URL")
		}
	}

	// The loopback listener, for a look from the node: a loopback address
	// (the Host check; nothing else on the cluster network reaches it).
	listen := conf["REAPER_LISTEN"]
	if lhost, _, err := net.SplitHostPort(listen); listen != "" && (err != nil || !net.ParseIP(lhost).IsLoopback()) {
		t.Errorf("REAPER_LISTEN=%q: want a loopback address", listen)
	}

	// /agents and /events are on the API socket, beside the control
	// socket (default /run/agent-supervisor): with a read-only root
	// filesystem their directory must be on a writable volume, or the
	// daemon cannot start (and the probes and kubectl exec ... supervisor
	// status have nothing to ask).
	apiSock := apiSocketOf(conf, c)
	if apiSock == "" {
		t.Fatal("the API socket is disabled: the probes ask it")
	}
	sockDir := path.Dir(apiSock)
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		mp := path.Clean(m.MountPath)
		return !m.ReadOnly && (mp == sockDir || strings.HasPrefix(sockDir, mp+"/"))
	}) {
		t.Errorf("the API and control sockets' directory %s is on no writable volume (the root filesystem is read-only)", sockDir)
	}

	// The probes: supervisor health, the image's binary, on that socket,
	// giving up before the kubelet does. Not an httpGet or tcpSocket on a
	// TCP listener: anyone who reaches it can hold all its connections,
	// and a refused probe restarts the pod.
	entry := dockerEntrypoint(t)
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.Exec == nil || p.HTTPGet != nil || p.TCPSocket != nil || p.GRPC != nil {
			t.Errorf("%s probe %+v: want an exec probe running supervisor health", name, p)
			continue
		}
		cmd := p.Exec.Command
		if len(cmd) < 2 || cmd[0] != entry || cmd[1] != "health" {
			t.Errorf("%s probe runs %q, want [%s health ...] (the image's entrypoint)", name, cmd, entry)
			continue
		}
		flags, err := probeFlags(cmd[2:])
		if err != nil {
			t.Errorf("%s probe %q: %v", name, cmd, err)
			continue
		}
		asked := healthSocket(flags, c)
		if asked != apiSock {
			t.Errorf("%s probe asks %q, but the daemon's API socket is %s", name, asked, apiSock)
		}
		timeout := 3 * time.Second // supervisor health's default (cmd/supervisor healthTimeout)
		if v, ok := flags["--timeout"]; ok {
			if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 {
				t.Errorf("%s probe --timeout %q: want a positive duration", name, v)
			}
		}
		if limit := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second; timeout >= limit {
			t.Errorf("%s probe: supervisor health waits %s, the kubelet %s: it must give up first, with its message", name, timeout, limit)
		}
	}

	// Scraping: the annotations name the --metrics-listen port, which is
	// on the node's IP.
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v", ann)
	}
	ml := envOf(c, "REAPER_METRICS_LISTEN")
	nodeIP := envOf(c, "NODE_IP")
	if ml == nil || nodeIP == nil || nodeIP.ValueFrom == nil || nodeIP.ValueFrom.FieldRef == nil ||
		nodeIP.ValueFrom.FieldRef.FieldPath != "status.hostIP" || !strings.HasPrefix(ml.Value, "[$(NODE_IP)]:") {
		t.Fatalf("REAPER_METRICS_LISTEN must be [$(NODE_IP)]:PORT (brackets, for an IPv6 node address) with NODE_IP from status.hostIP: %+v %+v", ml, nodeIP)
	}
	if slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "NODE_IP" }) >
		slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "REAPER_METRICS_LISTEN" }) {
		t.Error("NODE_IP must come before REAPER_METRICS_LISTEN: $(VAR) only expands earlier variables")
	}
	mport := strings.TrimPrefix(ml.Value, "[$(NODE_IP)]:")
	if ann["prometheus.io/port"] != mport {
		t.Errorf("prometheus.io/port %q, but the metrics listener is on port %s", ann["prometheus.io/port"], mport)
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return fmt.Sprint(p.ContainerPort) == mport }) {
		t.Errorf("no container port %s for the metrics listener", mport)
	}

	// Resources from the measured RSS; no CPU limit (throttling stalls
	// event intake).
	r := c.Resources
	if r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() || r.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v: want memory request and limit and a CPU request", r)
	}
	if _, ok := r.Limits[corev1.ResourceCPU]; ok {
		t.Error("a CPU limit: CFS throttling stalls event intake and the kills; leave it out")
	}

	// The image: the name the Dockerfile says to build.
	want := dockerImageName(t)
	img := c.Image
	if i := strings.LastIndex(img, ":"); i > strings.LastIndex(img, "/") {
		img = img[:i]
	}
	if img != want && !strings.HasSuffix(img, "/"+want) {
		t.Errorf("image %q: the Dockerfile builds %q", c.Image, want)
	}
	if len(c.Command) != 0 || len(c.Args) == 0 || c.Args[0] != "run" {
		t.Errorf("command %v args %v: want the image's entrypoint with args [run ...]", c.Command, c.Args)
	}
}

// volumeAt returns the volume mounted exactly at dir.
func volumeAt(t *testing.T, ps corev1.PodSpec, c corev1.Container, dir string) corev1.Volume {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(dir) {
			for _, v := range ps.Volumes {
				if v.Name == m.Name {
					return v
				}
			}
		}
	}
	t.Fatalf("nothing is mounted at %s", dir)
	return corev1.Volume{}
}

// apiSocketOf is the daemon's API socket as the container's environment
// and config file set it (the environment wins, as in the daemon): the
// default beside the control socket unless REAPER_API_SOCKET names one; ""
// when it is disabled.
func apiSocketOf(conf map[string]string, c corev1.Container) string {
	get := func(k string) (string, bool) {
		if e := envOf(c, k); e != nil {
			return e.Value, true
		}
		v, ok := conf[k]
		return v, ok
	}
	ctl := "/run/agent-supervisor/control.sock"
	if v, ok := get("REAPER_CONTROL_SOCKET"); ok {
		ctl = v
	}
	v, ok := get("REAPER_API_SOCKET")
	switch {
	case ok && v != "auto":
		return v
	case ctl == "":
		return ""
	}
	return path.Join(path.Dir(ctl), "api.sock")
}

// healthSocket is the API socket supervisor health asks with these flags
// in the container's environment (cmd/supervisor apiFlags.resolve): it
// reads no config file.
func healthSocket(flags map[string]string, c corev1.Container) string {
	env := func(k string) string {
		if e := envOf(c, k); e != nil {
			return e.Value
		}
		return ""
	}
	beside := func(ctl string) string { return path.Join(path.Dir(ctl), "api.sock") }
	if v, ok := flags["--api-socket"]; ok {
		return v
	}
	if v, ok := flags["--control-socket"]; ok {
		return beside(v)
	}
	if v := env("REAPER_API_SOCKET"); v != "" && v != "auto" {
		return v
	}
	if v := env("REAPER_CONTROL_SOCKET"); v != "" {
		return beside(v)
	}
	return "/run/agent-supervisor/api.sock"
}

// probeFlags reads supervisor health's flags (--name value or
// --name=value); anything else is an error.
func probeFlags(args []string) (map[string]string, error) {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		name, v, eq := strings.Cut(args[i], "=")
		switch name {
		case "--api-socket", "--control-socket", "--timeout":
		default:
			return nil, fmt.Errorf("%q is no flag of supervisor health", args[i])
		}
		if !eq {
			if i++; i == len(args) {
				return nil, fmt.Errorf("%s without a value", name)
			}
			v = args[i]
		}
		out[name] = v
	}
	return out, nil
}

// dockerEntrypoint is the final stage's ENTRYPOINT: the binary's path in
// the image.
func dockerEntrypoint(t *testing.T) string {
	t.Helper()
	st := stages(parseDockerfile(readFile(t, "../Dockerfile")))
	if len(st) == 0 {
		t.Fatal("the Dockerfile has no stage")
	}
	var entry []string
	for _, in := range st[len(st)-1].ins {
		if in.cmd == "ENTRYPOINT" {
			if err := json.Unmarshal([]byte(in.args), &entry); err != nil {
				t.Fatalf("ENTRYPOINT %s: %v", in.args, err)
			}
		}
	}
	if len(entry) != 1 {
		t.Fatalf("ENTRYPOINT %q: want the binary alone", entry)
	}
	return entry[0]
}
