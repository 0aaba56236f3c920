package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// RecoveryReport says what Open found and repaired.
type RecoveryReport struct {
	Messages       int      `json:"messages"`        // records kept
	LocalPending   int      `json:"local_pending"`   // of which with local recipients to deliver
	OrphanSpool    []string `json:"orphan_spool"`    // spool files without a record, removed
	MissingSpool   []string `json:"missing_spool"`   // records without a spool file, removed
	FinishedRecord []string `json:"finished_record"` // records with every recipient final, removed
	CorruptRecord  []string `json:"corrupt_record"`  // unreadable records, removed
}

// recover reconciles the records with the spool directory. It runs in Open,
// before anything else uses the queue.
func (q *Queue) recover() (RecoveryReport, error) {
	var rep RecoveryReport
	files := map[string]bool{}
	entries, err := os.ReadDir(q.spool)
	if err != nil {
		return rep, fmt.Errorf("queue: %w", err)
	}
	for _, e := range entries {
		if ValidID(e.Name()) && e.Type().IsRegular() {
			files[e.Name()] = true
			continue
		}
		if e.Name() == "tmp" && e.IsDir() {
			os.RemoveAll(q.SpoolPath(e.Name())) // messages never accepted
			continue
		}
		q.log.Warn("queue: removing stray file from the spool", "file", e.Name())
		os.RemoveAll(q.SpoolPath(e.Name()))
	}
	var local []string
	err = q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bMsgs)
		var drop [][]byte
		err := b.ForEach(func(k, v []byte) error {
			id := string(k)
			m := &Message{}
			switch {
			case json.Unmarshal(v, m) != nil:
				q.log.Error("queue: removing unreadable record", "queue_id", id)
				rep.CorruptRecord = append(rep.CorruptRecord, id)
			case !files[id]:
				q.log.Error("queue: record without its spool file; the message is lost", "queue_id", id, "from", m.From, "rcpts", len(m.Rcpts))
				rep.MissingSpool = append(rep.MissingSpool, id)
			case m.Done():
				rep.FinishedRecord = append(rep.FinishedRecord, id)
				delete(files, id)
				os.Remove(q.SpoolPath(id))
			default:
				delete(files, id)
				rep.Messages++
				if m.Status == StatusActive && (m.Pending(RouteLocal) || m.Pending(RouteRemote)) {
					local = append(local, id)
				}
				return nil
			}
			drop = append(drop, append([]byte(nil), k...))
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("queue: recovery: %w", err)
	}
	for id := range files {
		// Written before a crash or a failed commit: the client never got
		// 250 and will send the message again.
		q.log.Info("queue: removing spool file of a message that was never accepted", "queue_id", id)
		if err := os.Remove(q.SpoolPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return rep, fmt.Errorf("queue: %w", err)
		}
		rep.OrphanSpool = append(rep.OrphanSpool, id)
	}
	for _, id := range local {
		// Pushed by ID; the deliverers read the record and skip what is
		// not theirs.
		m, err := q.Get(id)
		if err != nil {
			continue
		}
		if m.Pending(RouteLocal) {
			rep.LocalPending++
		}
		q.schedule(m)
	}
	if len(rep.OrphanSpool)+len(rep.MissingSpool)+len(rep.CorruptRecord) > 0 || rep.Messages > 0 {
		q.log.Info("queue: recovered", "messages", rep.Messages, "local_pending", rep.LocalPending,
			"orphan_spool", len(rep.OrphanSpool), "missing_spool", len(rep.MissingSpool), "corrupt", len(rep.CorruptRecord))
	}
	return rep, nil
}
