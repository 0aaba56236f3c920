package queue

import (
	"os"
	"testing"
)

func TestTempFinish(t *testing.T) {
	q := openQueue(t, t.TempDir())
	defer q.Close()
	tmp, err := q.Temp()
	if err != nil {
		t.Fatal(err)
	}
	msg := "Received: by us\r\nAuthentication-Results: mx.example.test; spf=pass\r\n\tdkim=pass\r\nSubject: hi\r\nAuthentication-Results: other.example; dkim=fail\r\n\r\nbody\r\nAuthentication-Results: mx.example.test; in the body\r\n"
	tmp.Write([]byte(msg))
	tmp.Flush()
	if b, _ := os.ReadFile(tmp.Path()); string(b) != msg {
		t.Fatalf("temp file = %q", b)
	}
	w, err := tmp.Finish([]byte("Authentication-Results: mx.example.test; spf=fail\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(&Message{Rcpts: []Recipient{remote("x@remote.test")}}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(q.SpoolPath(tmp.ID()))
	want := "Authentication-Results: mx.example.test; spf=fail\r\n" + msg
	if string(got) != want {
		t.Errorf("spool file =\n%q\nwant\n%q", got, want)
	}
	if m, _ := q.Get(tmp.ID()); m.Size != int64(len(want)) {
		t.Errorf("size = %d, want %d", m.Size, len(want))
	}
	// The file is reused, empty, by the next message.
	path := tmp.Path()
	tmp.Release()
	next, _ := q.Temp()
	if next.Path() != path || next.ID() == tmp.ID() {
		t.Errorf("next temp: %s id %s; want the same file and a new ID", next.Path(), next.ID())
	}
	if fi, _ := os.Stat(next.Path()); fi.Size() != 0 {
		t.Errorf("reused temp file has %d bytes", fi.Size())
	}
	// Without a prefix, the message is copied as it is.
	next.Write([]byte("Subject: x\r\n\r\ny\r\n"))
	w, err = next.Finish(nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Discard()
}
