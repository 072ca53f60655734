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
