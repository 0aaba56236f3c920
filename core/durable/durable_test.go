package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestBatcherConcurrent(t *testing.T) {
	db := openDB(t)
	b := NewBatcher(db)
	errBad := errors.New("bad")
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("b"))
				if err != nil {
					return err
				}
				if err := bk.Put(fmt.Appendf(nil, "%03d", i), []byte("v")); err != nil {
					return err
				}
				switch i % 50 {
				case 7:
					return errBad
				case 8:
					panic("boom")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		switch i % 50 {
		case 7:
			if !errors.Is(err, errBad) {
				t.Errorf("update %d = %v, want errBad", i, err)
			}
		case 8:
			if !errors.Is(err, ErrPanic) {
				t.Errorf("update %d = %v, want ErrPanic", i, err)
			}
		default:
			if err != nil {
				t.Errorf("update %d = %v", i, err)
			}
		}
	}
	db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("b"))
		for i := range errs {
			got := bk.Get(fmt.Appendf(nil, "%03d", i)) != nil
			if want := i%50 != 7 && i%50 != 8; got != want {
				t.Errorf("key %d present = %v, want %v (a failed update must leave nothing)", i, got, want)
			}
		}
		return nil
	})
}

func TestDirSyncer(t *testing.T) {
	dir := t.TempDir()
	s := NewDirSyncer(dir)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), nil, 0o600)
			if err := s.Sync(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	bad := NewDirSyncer(filepath.Join(dir, "missing"))
	if err := bad.Sync(); err == nil {
		t.Error("Sync of a missing directory = nil")
	}
}

func TestWriteFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(p, []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "hello" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v", fi.Mode())
	}
	if err := WriteFile(filepath.Join(p, "under-a-file"), nil, 0o600); err == nil {
		t.Error("WriteFile under a file = nil")
	}
}

func TestMkdirAll(t *testing.T) {
	base := t.TempDir()
	p := filepath.Join(base, "a", "b", "c")
	if err := MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		t.Fatalf("Stat = %v, %v", fi, err)
	}
	if err := MkdirAll(p, 0o700); err != nil {
		t.Errorf("MkdirAll of an existing directory = %v", err)
	}
	f := filepath.Join(base, "file")
	os.WriteFile(f, nil, 0o600)
	if err := MkdirAll(filepath.Join(f, "x"), 0o700); err == nil {
		t.Error("MkdirAll under a file = nil")
	}
}
