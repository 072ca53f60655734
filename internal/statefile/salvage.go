package statefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// Damage says what Salvage found in a damaged file.
type Damage struct {
	Size    int64 // bytes in the file
	At      int64 // where the damage begins: the end of the last whole entry read
	Kept    int   // whole entries before At, returned
	Skipped int   // whole entries before At that were not valid, left out
	Err     error // what is wrong at At (or the first entry left out)
}

// Salvage reads a file Save wrote whose data is a JSON array, like Load.
// When the file is damaged — cut mid-write by a disk that lost the end of
// it, or garbage — it returns the whole, valid entries that precede the
// damage and a *Damage saying what was dropped, so the caller keeps what
// can be kept and says what was lost. Entries are only trusted after an
// intact boot id of this boot; a damaged file from another boot is
// ErrOtherBoot like an intact one.
func Salvage[T any](path string) ([]T, *Damage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("statefile: %w", err)
	}
	var e envelope
	if json.Unmarshal(b, &e) == nil {
		if boot := BootID(); boot == "" || e.BootID != boot {
			return nil, nil, fmt.Errorf("statefile: %s: %w", path, ErrOtherBoot)
		}
		var all []T
		if err := json.Unmarshal(e.Data, &all); err == nil {
			return all, nil, nil
		}
	}
	dmg := &Damage{Size: int64(len(b))}
	kept, err := walk[T](b, dmg)
	if errors.Is(err, ErrOtherBoot) {
		return nil, nil, fmt.Errorf("statefile: %s: %w", path, ErrOtherBoot)
	}
	if err != nil {
		dmg.Err = err
	}
	if dmg.Err == nil {
		dmg.Err = errors.New("not the state this version writes")
	}
	dmg.Kept = len(kept)
	return kept, dmg, nil
}

// walk decodes the envelope in b token by token, keeping the entries of
// its data array up to the first that is not whole JSON; entries that are
// whole but do not decode are counted in dmg.Skipped.
func walk[T any](b []byte, dmg *Damage) ([]T, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := delim(dec, '{'); err != nil {
		return nil, err
	}
	var kept []T
	boot := false
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return kept, err
		}
		switch key {
		case "boot_id":
			var id string
			if err := dec.Decode(&id); err != nil {
				return kept, err
			}
			if now := BootID(); now == "" || id != now {
				return nil, ErrOtherBoot
			}
			boot = true
		case "data":
			if !boot {
				return nil, errors.New("data before the boot id")
			}
			if err := delim(dec, '['); err != nil {
				return nil, err
			}
			for dec.More() {
				var v T
				err := dec.Decode(&v)
				var syn *json.SyntaxError
				switch {
				case err == nil:
					kept = append(kept, v)
				case errors.As(err, &syn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
					return kept, err
				default: // a whole value that is not an entry
					dmg.Skipped++
					if dmg.Err == nil {
						dmg.Err = fmt.Errorf("entry %d: %w", len(kept)+dmg.Skipped, err)
					}
				}
				dmg.At = dec.InputOffset()
			}
			if err := delim(dec, ']'); err != nil {
				return kept, err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return kept, err
			}
		}
	}
	if err := delim(dec, '}'); err != nil {
		return kept, err
	}
	dmg.At = dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		return kept, errors.New("data after the end")
	}
	return kept, nil
}

// delim reads the next token and wants it to be d.
func delim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != d {
		return fmt.Errorf("want %q at byte %d, found %v", d, dec.InputOffset(), tok)
	}
	return nil
}
