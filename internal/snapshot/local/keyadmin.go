package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// A repository's master key never changes (every object is sealed under
// it); what changes is what opens it. Each keys/ object wraps it once: a
// password, a KMS key. Adding a key object lets a second secret open the
// repository; replacing the one a Repo was opened with is how a password
// is changed, or a repository moved from a password to a KMS key and
// back, without rewriting a single pack. As restic's keys do, this
// protects against a leaked password only for the future: whoever read
// the master key with the old one keeps it.

// KeyInfo describes one key object.
type KeyInfo struct {
	ID      string    `json:"id"`   // the object's name under keys/
	Kind    string    `json:"kind"` // password, aws-kms
	Created time.Time `json:"created"`
	Host    string    `json:"host"`
	// Current: the key object this Repo was opened with.
	Current bool `json:"current"`
}

var errNotEncrypted = errors.New("the repository is not encrypted: it has no keys (move to an encrypted one as the README says)")

// Keys lists the repository's key objects, oldest first.
func (r *Repo) Keys(ctx context.Context) ([]KeyInfo, error) {
	if r.sealer == nil {
		return nil, errNotEncrypted
	}
	objs, err := r.list(ctx, "keys/")
	if err != nil {
		return nil, err
	}
	var out []KeyInfo
	for _, o := range objs {
		b, err := r.get(ctx, o.Name)
		if errors.Is(err, errNoKey) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		var k keyObject
		if err := json.Unmarshal(b, &k); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errCorrupt, r.key(o.Name), err)
		}
		out = append(out, KeyInfo{ID: strings.TrimPrefix(o.Name, "keys/"), Kind: k.Kind, Created: k.Created, Host: k.Host, Current: o.Name == r.keyName})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// AddKey wraps the master key with w, checks that w opens what it wrapped
// (a KMS key the role may encrypt with but not decrypt with is refused
// before anything is stored), and stores a new key object. It returns the
// object's ID.
func (r *Repo) AddKey(ctx context.Context, w KeyWrapper) (string, error) {
	if r.sealer == nil {
		return "", errNotEncrypted
	}
	lk, err := r.lock(ctx, "key add", false)
	if err != nil {
		return "", err
	}
	defer lk.release()
	return r.addCheckedKey(lk.ctx, w)
}

func (r *Repo) addCheckedKey(ctx context.Context, w KeyWrapper) (string, error) {
	data, err := w.Wrap(ctx, r.rc.ID, r.master)
	if err != nil {
		return "", fmt.Errorf("wrap the repository key: %w", err)
	}
	back, err := w.Unwrap(ctx, r.rc.ID, data)
	if err != nil {
		return "", fmt.Errorf("the new key does not open what it wrapped, so it was not added: %w", err)
	}
	if !bytes.Equal(back, r.master) {
		return "", errors.New("the new key opens to another key than it wrapped, so it was not added")
	}
	body, _ := json.MarshalIndent(keyObject{Kind: w.Kind(), Created: time.Now().UTC(), Host: hostname(), Data: data}, "", "  ")
	name := "keys/" + newID()
	if err := r.put(ctx, name, body, true); err != nil {
		return "", err
	}
	return strings.TrimPrefix(name, "keys/"), nil
}

// RemoveKey removes key object id (or an unambiguous prefix of it). The
// key this Repo was opened with is not removed (ReplaceKey replaces it),
// so a repository always keeps a key that opens it. It holds the
// repository alone: two removals, each by a key the other removes, would
// leave no key.
func (r *Repo) RemoveKey(ctx context.Context, id string) (string, error) {
	if r.sealer == nil {
		return "", errNotEncrypted
	}
	lk, err := r.lock(ctx, "key remove", true)
	if err != nil {
		return "", err
	}
	defer lk.release()
	keys, err := r.Keys(lk.ctx)
	if err != nil {
		return "", err
	}
	if err := r.checkCurrent(keys); err != nil {
		return "", err
	}
	var match []KeyInfo
	for _, k := range keys {
		if k.ID == id {
			match = []KeyInfo{k}
			break
		}
		if id != "" && strings.HasPrefix(k.ID, id) {
			match = append(match, k)
		}
	}
	switch {
	case len(match) == 0:
		return "", fmt.Errorf("no key %q in %s ('conveyor snapshot key list' shows them)", id, r.Location())
	case len(match) > 1:
		return "", fmt.Errorf("key %q is ambiguous: %d keys start with it", id, len(match))
	case match[0].Current:
		return "", fmt.Errorf("key %s is the one this command opened the repository with: it is kept ('conveyor snapshot key passwd' replaces it by a new one)", match[0].ID)
	}
	if err := lk.check(); err != nil {
		return "", err
	}
	return match[0].ID, r.del(lk.ctx, "keys/"+match[0].ID)
}

// ReplaceKey adds a key object wrapped by w, then removes the one this
// Repo was opened with: a password change. The Repo is then as if opened
// with w. It holds the repository alone, as RemoveKey does.
func (r *Repo) ReplaceKey(ctx context.Context, w KeyWrapper) (added, removed string, err error) {
	return r.ReplaceKeyThen(ctx, w, nil)
}

// ReplaceKeyThen is ReplaceKey calling between, when set, once the new
// key object is stored and before the old one is removed: where the new
// secret must be saved (the generated password file), a crash or a
// failure at any point leaves a secret on hand that opens the
// repository. If between fails, the old key object is kept.
func (r *Repo) ReplaceKeyThen(ctx context.Context, w KeyWrapper, between func(added string) error) (added, removed string, err error) {
	if r.sealer == nil {
		return "", "", errNotEncrypted
	}
	lk, err := r.lock(ctx, "key passwd", true)
	if err != nil {
		return "", "", err
	}
	defer lk.release()
	keys, err := r.Keys(lk.ctx)
	if err != nil {
		return "", "", err
	}
	if err := r.checkCurrent(keys); err != nil {
		return "", "", err
	}
	added, err = r.addCheckedKey(lk.ctx, w)
	if err != nil {
		return "", "", err
	}
	if between != nil {
		if err := between(added); err != nil {
			return added, "", fmt.Errorf("key %s added, the old one kept: %w", added, err)
		}
	}
	if err := lk.check(); err != nil {
		return added, "", fmt.Errorf("key %s added, but the old one was not removed: %w", added, err)
	}
	removed = strings.TrimPrefix(r.keyName, "keys/")
	if err := r.del(lk.ctx, r.keyName); err != nil {
		return added, "", fmt.Errorf("key %s added, but removing the old one (%s) failed: %w", added, removed, err)
	}
	r.keyName = "keys/" + added
	return added, removed, nil
}

// checkCurrent: the key object this Repo was opened with still exists
// (another process may have removed or replaced it since).
func (r *Repo) checkCurrent(keys []KeyInfo) error {
	for _, k := range keys {
		if k.Current {
			return nil
		}
	}
	return fmt.Errorf("the key that opened %s was removed meanwhile (another 'key remove' or 'key passwd'); nothing done", r.Location())
}
