package forget

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/tasks"
)

// Keys (prefix "enrollq:" by default):
//
//	<prefix>forget:req:<account key>  hash: a forget under way — account id, request id, state, …
//	                                  (it holds the account id until the erasure ends, so that a
//	                                  crashed process can resume; Complete deletes it)
//	<prefix>erasures                  hash: account key → erasure record (JSON; no account id)
//	<prefix>erasure:key               string: the generated HMAC key, when none is configured
//
// The account key is the hex HMAC-SHA256 of the account id.

// AccountKey is the account's keyed hash (hex HMAC-SHA256 with the
// erasure key): what the erasure record and the delete task's id show
// instead of the account id.
func (f *Forgetter) AccountKey(accountID string) string {
	m := hmac.New(sha256.New, f.key)
	m.Write([]byte(accountID))
	return hex.EncodeToString(m.Sum(nil))
}

func (f *Forgetter) loadKey(ctx context.Context) ([]byte, error) {
	if len(f.cfg.Key) > 0 {
		return f.cfg.Key, nil
	}
	k := f.cfg.Prefix + "erasure:key"
	var b [32]byte
	_, _ = rand.Read(b[:])
	if err := f.rdb.SetNX(ctx, k, hex.EncodeToString(b[:]), 0).Err(); err != nil {
		return nil, fmt.Errorf("forget: keeping the erasure key: %w", err)
	}
	v, err := f.rdb.Get(ctx, k).Result()
	if err != nil {
		return nil, fmt.Errorf("forget: reading the erasure key: %w", err)
	}
	return []byte(v), nil
}

// Request states, as stored.
const (
	reqFenced        = "fenced"
	reqRemoteDeleted = "remote_deleted"
	reqFailed        = "failed"
)

// request is a forget under way.
type request struct {
	AccountID string
	RequestID string
	State     string
	LocalOnly bool
	// VerisoulRequestID is the delete's request id, once it succeeded.
	VerisoulRequestID string
	Code, LastError   string
	At                time.Time
	// Project is the Verisoul project whose key deletes the account
	// (tasks.ProjectName: never ""; a request stored before projects has
	// none, which reads as the default).
	Project string
}

// payload is the request's delete task payload.
func (r request) payload() tasks.DeletePayload {
	return tasks.DeletePayload{AccountID: r.AccountID, RequestID: r.RequestID, Project: r.Project}
}

func (f *Forgetter) reqKey(key string) string { return f.cfg.Prefix + "forget:req:" + key }

func (f *Forgetter) request(ctx context.Context, key string) (request, bool, error) {
	m, err := f.rdb.HGetAll(ctx, f.reqKey(key)).Result()
	if err != nil {
		return request{}, false, fmt.Errorf("forget: reading the request: %w", err)
	}
	if len(m) == 0 {
		return request{}, false, nil
	}
	ms, _ := strconv.ParseInt(m["at"], 10, 64)
	return request{AccountID: m["account"], RequestID: m["request_id"], State: m["state"], LocalOnly: m["local_only"] == "1",
		VerisoulRequestID: m["rid"], Code: m["code"], LastError: m["err"], At: time.UnixMilli(ms).UTC(),
		Project: tasks.ProjectName(m["project"])}, true, nil
}

func (f *Forgetter) saveRequest(ctx context.Context, key string, r request) error {
	lo := "0"
	if r.LocalOnly {
		lo = "1"
	}
	err := f.rdb.HSet(ctx, f.reqKey(key), "account", r.AccountID, "request_id", r.RequestID, "state", r.State,
		"local_only", lo, "rid", r.VerisoulRequestID, "code", r.Code, "err", r.LastError, "project", tasks.ProjectName(r.Project),
		"at", strconv.FormatInt(time.Now().UnixMilli(), 10)).Err()
	if err != nil {
		return fmt.Errorf("forget: recording the request: %w", err)
	}
	return nil
}

// Erasure is the record an erasure leaves: no account id, only its keyed
// hash, so that whoever holds the key and an account id can prove the
// account was erased, and nobody can list erased accounts. Kept until
// removed by hand.
type Erasure struct {
	AccountKey string    `json:"-"`
	RequestID  string    `json:"request_id"`
	ErasedAt   time.Time `json:"erased_at"`
	LocalOnly  bool      `json:"local_only,omitempty"`
	// VerisoulRequestID is Verisoul's request id of the delete ("" when
	// the account was not found there, or LocalOnly).
	VerisoulRequestID string `json:"verisoul_request_id,omitempty"`
	// Project is the forget's Verisoul project, the one the account was
	// deleted at unless LocalOnly (omitted for the default project).
	Project string `json:"project,omitempty"`
}

func (f *Forgetter) erasuresKey() string { return f.cfg.Prefix + "erasures" }

// Erasure returns the erasure record of accountID, if it was erased.
func (f *Forgetter) Erasure(ctx context.Context, accountID string) (Erasure, bool, error) {
	return f.erasureOf(ctx, f.AccountKey(accountID))
}

func (f *Forgetter) erasureOf(ctx context.Context, key string) (Erasure, bool, error) {
	v, err := f.rdb.HGet(ctx, f.erasuresKey(), key).Result()
	if err == redis.Nil {
		return Erasure{}, false, nil
	}
	if err != nil {
		return Erasure{}, false, fmt.Errorf("forget: reading the erasure record: %w", err)
	}
	var e Erasure
	if err := json.Unmarshal([]byte(v), &e); err != nil {
		return Erasure{}, false, fmt.Errorf("forget: erasure record %s: %w", key, err)
	}
	e.AccountKey = key
	return e, true, nil
}

// Status is where a forget of an account stands.
type Status struct {
	// State: "none", "fenced" (waiting for the remote delete),
	// "remote_deleted" (erasing), "failed" (the delete is a dead letter;
	// the account stays fenced until Forget runs again), or "erased".
	State     string
	RequestID string
	// Project is the forget's Verisoul project (under way, or of the
	// latest erasure); "" when State is "none".
	Project string
	// Code and LastError: why the delete failed.
	Code, LastError string
	// Erasure is set when State is "erased" (the latest erasure).
	Erasure *Erasure
}

// StatusOf says where the forget of accountID stands.
func (f *Forgetter) StatusOf(ctx context.Context, accountID string) (Status, error) {
	key := f.AccountKey(accountID)
	req, found, err := f.request(ctx, key)
	if err != nil {
		return Status{}, err
	}
	if found {
		return Status{State: req.State, RequestID: req.RequestID, Project: req.Project, Code: req.Code, LastError: req.LastError}, nil
	}
	e, ok, err := f.erasureOf(ctx, key)
	if err != nil || !ok {
		return Status{State: "none"}, err
	}
	return Status{State: StateErased, RequestID: e.RequestID, Project: tasks.ProjectName(e.Project), Erasure: &e}, nil
}

// FailedDelete is a forget whose delete at Verisoul is a dead letter: the
// account stays fenced until Forget runs again.
type FailedDelete struct {
	AccountID, RequestID string
	// Project is the Verisoul project whose delete failed.
	Project         string
	Code, LastError string
	// At is when the request was last written (its failure).
	At time.Time
}

// FailedDeletes lists the forgets whose delete failed (the delete task's
// dead letters), oldest first. It walks the forget requests under way
// (SCAN), which are few.
func (f *Forgetter) FailedDeletes(ctx context.Context) ([]FailedDelete, error) {
	var out []FailedDelete
	err := f.scanKeys(ctx, f.cfg.Prefix+"forget:req:*", func(_ redis.UniversalClient, k string) error {
		req, found, err := f.request(ctx, k[len(f.reqKey("")):])
		if err != nil || !found || req.State != reqFailed {
			return err
		}
		out = append(out, FailedDelete{AccountID: req.AccountID, RequestID: req.RequestID, Project: req.Project, Code: req.Code, LastError: req.LastError, At: req.At})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("forget: listing failed deletes: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}
