package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

// columns reads the named text columns of the kill row id; NULL is nil.
func columns(t *testing.T, pg *Postgres, id string, names ...string) []*string {
	t.Helper()
	got := make([]*string, len(names))
	dest := make([]any, len(names))
	for i := range got {
		dest[i] = &got[i]
	}
	q := "SELECT " + strings.Join(names, ", ") + " FROM tel.agent_kills WHERE id = $1"
	if err := pg.pool.QueryRow(context.Background(), q, id).Scan(dest...); err != nil {
		t.Fatal(err)
	}
	return got
}

// same says whether a column read as got is want: both NULL, or the same
// text.
func same(got, want *string) bool {
	return (want == nil) == (got == nil) && (want == nil || *got == *want)
}

// The columns later migrations added to tel.agent_kills: each goes through
// the spool to PostgreSQL, a row without it leaves it NULL, and the
// migration run again changes nothing.

// TestIntegrationRequestedBy: a manual kill's row carries requested_by
// (migration 003); other rows leave it NULL.
func TestIntegrationRequestedBy(t *testing.T) {
	st, sp, pg := dbStore(t)
	manual := killRec("", 601, "killed", "claude")
	manual.Reason, manual.RequestedBy = "manual", "uid 0 pid 4321"
	a, _ := st.Add(KindKill, time.Now(), nil, manual)
	b, _ := st.Add(KindKill, time.Now(), nil, killRec("", 602, "killed", "claude"))
	// The spool line holds it too: a row still spooled at a restart keeps it.
	recs, _, err := ReadSpool(sp.dir)
	if err != nil || len(recs) != 2 || recs[0].Kill.RequestedBy != "uid 0 pid 4321" || recs[1].Kill.RequestedBy != "" {
		t.Fatalf("spooled: %+v %v", recs, err)
	}
	flush(t, st)
	for id, want := range map[string]*string{a.ID: &manual.RequestedBy, b.ID: nil} {
		got := columns(t, pg, id, "reason", "requested_by")
		if got[0] == nil || !same(got[1], want) {
			t.Errorf("row %s: reason %v requested_by %v, want %v", id, deref(got[0]), deref(got[1]), deref(want))
		}
	}
	migrateAgain(t, pg.pool, "003_requested_by.sql")
}

// TestIntegrationAttribution: a kill row's cgroup, container_id and
// pod_uid (migration 005); a row that has none leaves the columns NULL.
func TestIntegrationAttribution(t *testing.T) {
	st, sp, pg := dbStore(t)
	const id = "3f4e7c0b9b5d2a8e1f6c4d7a9b0e2f1c3d5a7b9c0e2f4a6b8c0d2e4f6a8b0c2d"
	pod := killRec("", 701, "killed", "claude")
	pod.Cgroup = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8f3a2b1c_4d5e_6f70_8192_a3b4c5d6e7f8.slice/cri-containerd-" + id + ".scope"
	pod.ContainerID, pod.PodUID = id, "8f3a2b1c-4d5e-6f70-8192-a3b4c5d6e7f8"
	host := killRec("", 702, "killed", "claude")
	host.Cgroup = "/user.slice/bad\xffname" // cgroup names are bytes: made valid text
	none := killRec("", 703, "killed", "claude")
	a, _ := st.Add(KindKill, time.Now(), nil, pod)
	b, _ := st.Add(KindKill, time.Now(), nil, host)
	c, _ := st.Add(KindKill, time.Now(), nil, none)
	recs, _, err := ReadSpool(sp.dir)
	if err != nil || len(recs) != 3 || recs[0].Kill.PodUID != pod.PodUID || recs[0].Kill.ContainerID != id || recs[2].Kill.Cgroup != "" {
		t.Fatalf("spooled: %+v %v", recs, err)
	}
	flush(t, st)
	p := func(s string) *string { return &s }
	for id, want := range map[string][3]*string{
		a.ID: {&pod.Cgroup, &pod.ContainerID, &pod.PodUID},
		b.ID: {p("/user.slice/bad\uFFFDname"), nil, nil},
		c.ID: {nil, nil, nil},
	} {
		got := columns(t, pg, id, "cgroup", "container_id", "pod_uid")
		for i := range got {
			if !same(got[i], want[i]) {
				t.Errorf("row %s column %d: %v, want %v", id, i, deref(got[i]), deref(want[i]))
			}
		}
	}
	migrateAgain(t, pg.pool, "005_attribution.sql")
}
