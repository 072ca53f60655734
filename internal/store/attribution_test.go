package store

import (
	"context"
	"testing"
	"time"
)

// TestIntegrationAttribution: a kill row's cgroup, container_id and
// pod_uid (migration 005) go through the spool to PostgreSQL; a row that
// has none leaves the columns NULL; migration 005 run again changes
// nothing.
func TestIntegrationAttribution(t *testing.T) {
	db := testDB(t)
	ctx := context.Background()
	pool := testPool(t, db)
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, 100)
	defer sp.Close()
	st := New(Config{Spool: sp, Postgres: NewPostgres(pool), Host: "h"})
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
	recs, _, err := ReadSpool(dir)
	if err != nil || len(recs) != 3 || recs[0].Kill.PodUID != pod.PodUID || recs[0].Kill.ContainerID != id || recs[2].Kill.Cgroup != "" {
		t.Fatalf("spooled: %+v %v", recs, err)
	}
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p := func(s string) *string { return &s }
	for id, want := range map[string][3]*string{
		a.ID: {&pod.Cgroup, &pod.ContainerID, &pod.PodUID},
		b.ID: {p("/user.slice/bad\uFFFDname"), nil, nil},
		c.ID: {nil, nil, nil},
	} {
		var got [3]*string
		if err := pool.QueryRow(ctx, "SELECT cgroup, container_id, pod_uid FROM tel.agent_kills WHERE id = $1", id).
			Scan(&got[0], &got[1], &got[2]); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if (want[i] == nil) != (got[i] == nil) || (want[i] != nil && *got[i] != *want[i]) {
				t.Errorf("row %s column %d: %v, want %v", id, i, deref(got[i]), deref(want[i]))
			}
		}
	}
	sql, _ := migrations.ReadFile("migrations/005_attribution.sql")
	if _, err := pool.Exec(ctx, string(sql)); err != nil {
		t.Errorf("005 a second time: %v", err)
	}
}
