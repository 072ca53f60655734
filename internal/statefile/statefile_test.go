package statefile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.json")
	if err := Load(path, new([]int)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := Save(path, []int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	var got []int
	if err := Load(path, &got); err != nil || len(got) != 3 || got[2] != 3 {
		t.Fatalf("load: %v %v", got, err)
	}
	// Another boot's file: its boottimes mean nothing now.
	os.WriteFile(path, []byte(`{"boot_id":"not-this-one","data":[1]}`), 0o600)
	if BootID() != "" {
		if err := Load(path, &got); !errors.Is(err, ErrOtherBoot) {
			t.Fatalf("other boot: %v", err)
		}
	}
	os.WriteFile(path, []byte(`{"boot_id":`), 0o600)
	if err := Load(path, &got); err == nil {
		t.Fatal("a damaged file loaded")
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

type entry struct {
	PID  int32  `json:"pid"`
	Name string `json:"name"`
}

// A file cut at every offset, and garbage: Salvage keeps exactly the whole
// entries before the cut, says where the damage is, and never fails.
func TestSalvage(t *testing.T) {
	if BootID() == "" {
		t.Skip("skipped: the kernel has no boot id (/proc/sys/kernel/random/boot_id)")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "s.json")
	want := []entry{{1, "a"}, {2, "b b"}, {3, "c"}}
	if err := Save(path, want); err != nil {
		t.Fatal(err)
	}
	whole, _ := os.ReadFile(path)
	got, dmg, err := Salvage[entry](path)
	if err != nil || dmg != nil || len(got) != 3 {
		t.Fatalf("intact file: %v %+v %v", got, dmg, err)
	}
	// The offset just after each entry's closing brace.
	var ends []int
	for i, c := range whole {
		if c == '}' && i < len(whole)-3 {
			ends = append(ends, i+1)
		}
	}
	if len(ends) != 3 {
		t.Fatalf("entry ends %v in %s", ends, whole)
	}
	for cut := 0; cut < len(whole)-1; cut++ {
		os.WriteFile(path, whole[:cut], 0o600)
		got, dmg, err := Salvage[entry](path)
		if err != nil || dmg == nil {
			t.Fatalf("cut at %d: %v, %+v, %v", cut, got, dmg, err)
		}
		n := 0
		for _, e := range ends {
			if e <= cut {
				n++
			}
		}
		if len(got) != n || dmg.Kept != n || dmg.Size != int64(cut) || dmg.At > int64(cut) || dmg.Err == nil {
			t.Errorf("cut at %d of %d: kept %v (%+v), want the %d whole entries", cut, len(whole), got, dmg, n)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("cut at %d: entry %d is %+v, want %+v", cut, i, got[i], want[i])
			}
		}
	}
	boot := BootID()
	for name, c := range map[string]struct {
		data       string
		kept, skip int
		otherBoot  bool
	}{
		"garbage":           {data: "\x00\x17garbage\xff{{{", kept: 0},
		"empty":             {data: "", kept: 0},
		"not an envelope":   {data: `[1,2,3]`, kept: 0},
		"data not an array": {data: `{"boot_id":"` + boot + `","data":{"pid":1}}`, kept: 0},
		"a bad entry":       {data: `{"boot_id":"` + boot + `","data":[{"pid":1},{"pid":"x"},{"pid":3}]}`, kept: 2, skip: 1},
		"garbage mid-array": {data: `{"boot_id":"` + boot + `","data":[{"pid":1},@@@,{"pid":3}]}`, kept: 1},
		"another boot, cut": {data: `{"boot_id":"not-this-one","data":[{"pid":1},`, otherBoot: true},
		"zeros":             {data: string(make([]byte, 4096)), kept: 0},
	} {
		os.WriteFile(path, []byte(c.data), 0o600)
		got, dmg, err := Salvage[entry](path)
		if c.otherBoot {
			if !errors.Is(err, ErrOtherBoot) {
				t.Errorf("%s: %v, %+v, %v; want ErrOtherBoot", name, got, dmg, err)
			}
			continue
		}
		if err != nil || dmg == nil || len(got) != c.kept || dmg.Skipped != c.skip || dmg.Err == nil {
			t.Errorf("%s: kept %v, %+v, %v; want %d kept, %d skipped", name, got, dmg, err, c.kept, c.skip)
		}
	}
}
