package job

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestIDIsStableAndDistinct(t *testing.T) {
	t.Parallel()
	a := ID("input", "a.txt", Revision("", "etag1"))
	if !ValidID(a) {
		t.Fatalf("ID %q does not match %s", a, IDPattern)
	}
	if a != ID("input", "a.txt", Revision("", "etag1")) {
		t.Fatal("same object version gave two IDs")
	}
	others := []string{
		ID("input", "a.txt", Revision("", "etag2")),   // new content
		ID("input", "a.txt", Revision("v1", "etag1")), // versioned
		ID("other", "a.txt", Revision("", "etag1")),   // other bucket
		ID("input", "a.txt\x00", Revision("", "etag1")),
		ID("input", "a.tx", Revision("", "tetag1")), // no ambiguity at field boundaries
	}
	seen := map[string]bool{a: true}
	for _, o := range others {
		if seen[o] {
			t.Fatalf("collision: %s", o)
		}
		seen[o] = true
	}
	if Revision("null", "e") != Revision("", "e") {
		t.Error(`version "null" (unversioned bucket) must fall back to the ETag`)
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "../../etc/passwd", "0123456789abcdef0123456789abcdeF", "0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef0", "$(reboot)", "0123456789abcdef0123456789abcde\n"} {
		if ValidID(bad) || CheckID(bad) == nil {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestLifecycle(t *testing.T) {
	t.Parallel()
	r := New("input", "k", "", "e", 10, 3, t0)
	if r.State != Queued {
		t.Fatalf("new job is %s", r.State)
	}
	if err := r.Claim("vol-a/p1", "t1", t0.Add(time.Second), time.Minute, false); err != nil {
		t.Fatal(err)
	}
	if r.State != Running || r.Attempt != 1 || r.Owner != "vol-a/p1" {
		t.Fatalf("after claim: %+v", r)
	}
	// A live lease is not taken by another worker.
	if err := r.Claim("vol-b/p1", "t2", t0.Add(2*time.Second), time.Minute, true); !errors.Is(err, ErrBusy) {
		t.Fatalf("claim of a held job: %v", err)
	}
	code := 1
	r.Fail(t0.Add(3*time.Second), &code, "exit 1", false, 10*time.Second)
	if r.State != Retrying || r.NextAttemptAt == nil || !r.NextAttemptAt.Equal(t0.Add(13*time.Second)) {
		t.Fatalf("after fail: %+v", r)
	}
	if err := r.Claim("vol-a/p1", "t3", t0.Add(5*time.Second), time.Minute, false); !errors.Is(err, ErrNotYet) {
		t.Fatalf("early retry: %v", err)
	}
	if err := r.Claim("vol-a/p1", "t4", t0.Add(13*time.Second), time.Minute, false); err != nil {
		t.Fatal(err)
	}
	r.Succeed(t0.Add(14*time.Second), []Output{{Key: "k/out", Size: 5}, {Key: "k/b", Size: 7}})
	if r.State != Succeeded || r.OutputBytes != 12 || *r.ExitCode != 0 || len(r.Attempts) != 2 {
		t.Fatalf("after success: %+v", r)
	}
	if r.Attempts[0].ExitCode == nil || *r.Attempts[0].ExitCode != 1 || r.Attempts[1].FinishedAt.IsZero() {
		t.Fatalf("attempt history: %+v", r.Attempts)
	}
	if err := r.Claim("vol-a/p1", "t5", t0.Add(time.Hour), time.Minute, true); !errors.Is(err, ErrFinished) {
		t.Fatalf("claim of a finished job: %v", err)
	}
}

func TestAttemptsRunOut(t *testing.T) {
	t.Parallel()
	r := New("input", "k", "", "e", 10, 2, t0)
	now := t0
	for i := 0; i < 2; i++ {
		if err := r.Claim("v/p", "t", now, time.Minute, false); err != nil {
			t.Fatal(err)
		}
		r.Fail(now, nil, "boom", false, time.Second)
		now = now.Add(time.Minute)
	}
	if r.State != Dead || r.FinishedAt == nil {
		t.Fatalf("after 2 of 2 attempts failed: %s", r.State)
	}
	if err := r.Retry(now, 2); err != nil {
		t.Fatal(err)
	}
	if r.State != Queued || r.MaxAttempts != 4 {
		t.Fatalf("after retry: state %s max %d", r.State, r.MaxAttempts)
	}
}

func TestPermanentFailureIsDeadAtOnce(t *testing.T) {
	t.Parallel()
	r := New("input", "k", "", "e", 10, 5, t0)
	r.Claim("v/p", "t", t0, time.Minute, false)
	r.Fail(t0, nil, "processor not found", true, time.Second)
	if r.State != Dead || r.Attempt != 1 {
		t.Fatalf("permanent failure: state %s attempt %d", r.State, r.Attempt)
	}
}

func TestCrashedAttemptIsTakenOver(t *testing.T) {
	t.Parallel()
	r := New("input", "k", "", "e", 10, 3, t0)
	r.Claim("vol-a/p1", "t1", t0, time.Minute, false)
	// A restarted process on the same volume proved by its lock that
	// nobody runs it.
	if err := r.Claim("vol-a/p2", "t2", t0.Add(time.Second), time.Minute, true); err != nil {
		t.Fatalf("take-over by the owning volume: %v", err)
	}
	if r.Attempt != 2 || !strings.HasPrefix(r.Attempts[0].Error, CrashCause) {
		t.Fatalf("crashed attempt not closed as a crash: %+v", r.Attempts)
	}
	// Another volume (a clone restored from a snapshot has a new identity)
	// waits for the lease to lapse, whatever its own locks say.
	if err := r.Claim("vol-b/p1", "t3", t0.Add(30*time.Second), time.Minute, true); !errors.Is(err, ErrBusy) {
		t.Fatalf("foreign take-over before lease end: %v", err)
	}
	if err := r.Claim("vol-b/p1", "t3", t0.Add(2*time.Minute), time.Minute, false); err != nil {
		t.Fatalf("claim after lease end: %v", err)
	}
	if r.Attempts[1].Error != CrashCause+" (its lease lapsed)" {
		t.Fatalf("lapsed attempt: %q", r.Attempts[1].Error)
	}
}

func TestRenewOnlyWithToken(t *testing.T) {
	t.Parallel()
	r := New("input", "k", "", "e", 10, 3, t0)
	r.Claim("vol-a/p1", "tok-1", t0, time.Minute, false)
	for _, bad := range []string{"", "tok-2"} {
		if err := r.Renew(bad, t0, time.Minute); !errors.Is(err, ErrLost) {
			t.Fatalf("renew with token %q: %v", bad, err)
		}
	}
	if err := r.Renew("tok-1", t0.Add(30*time.Second), time.Minute); err != nil || !r.LeaseUntil.Equal(t0.Add(90*time.Second)) {
		t.Fatalf("renew: %v, lease %v", err, r.LeaseUntil)
	}
	// Once the lease lapsed and another attempt claimed the job, the old
	// token renews nothing.
	r.Claim("vol-b/p1", "tok-2", t0.Add(3*time.Minute), time.Minute, false)
	if err := r.Renew("tok-1", t0.Add(3*time.Minute), time.Minute); !errors.Is(err, ErrLost) {
		t.Fatalf("renew by the lapsed attempt: %v", err)
	}
}

func TestHandBackRestoresTheJobAsBeforeTheAttempt(t *testing.T) {
	t.Parallel()
	r := New("input", "k", "", "e", 10, 3, t0)
	r.Claim("vol-a/p1", "t1", t0, time.Minute, false)
	if err := r.HandBack("t1", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if r.State != Queued || r.Attempt != 0 || len(r.Attempts) != 0 || r.Owner != "" || r.Token != "" || r.Handbacks != 1 {
		t.Fatalf("hand-back of a first attempt: %+v", r)
	}
	// After a real failure, a handed-back attempt leaves the job retrying,
	// due at once, with the earlier failure as its error.
	r.Claim("vol-a/p1", "t2", t0, time.Minute, false)
	code := 2
	r.Fail(t0.Add(time.Second), &code, "exit 2", false, time.Second)
	r.Claim("vol-a/p1", "t3", t0.Add(time.Minute), time.Minute, false)
	if err := r.HandBack("t3", t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if r.State != Retrying || r.Attempt != 1 || len(r.Attempts) != 1 || r.Error != "exit 2" || !r.NextAttemptAt.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("hand-back after a failure: %+v", r)
	}
	if err := r.HandBack("t3", t0); !errors.Is(err, ErrLost) {
		t.Fatalf("hand-back of a job not held: %v", err)
	}
	// Handed back any number of times, a job never runs out of attempts.
	for i := 0; i < 10; i++ {
		if err := r.Claim("vol-a/p1", "t", t0.Add(time.Hour), time.Minute, false); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		r.HandBack("t", t0.Add(time.Hour))
	}
	if r.State == Dead || r.Attempt != 1 {
		t.Fatalf("after 10 hand-backs: %s, attempt %d", r.State, r.Attempt)
	}
}

func TestSupersededIsTerminalNotDeadAndNotRetried(t *testing.T) {
	t.Parallel()
	r := New("input", "k", "v1", "e", 10, 3, t0)
	r.Claim("vol-a/p1", "t1", t0, time.Minute, false)
	if err := r.Supersede(t0.Add(time.Second), "version v2 is current"); err != nil {
		t.Fatal(err)
	}
	if r.State != Superseded || !r.State.Terminal() || r.FinishedAt == nil || r.Reason == "" || r.Error != "" || r.Token != "" {
		t.Fatalf("superseded: %+v", r)
	}
	if err := r.Claim("vol-a/p1", "t2", t0.Add(time.Hour), time.Minute, true); !errors.Is(err, ErrFinished) {
		t.Fatalf("claim of a superseded job: %v", err)
	}
	if err := r.Retry(t0, 1); err == nil {
		t.Fatal("a superseded job was retried")
	}
	if err := r.Supersede(t0, "again"); !errors.Is(err, ErrFinished) {
		t.Fatalf("superseding a finished job: %v", err)
	}
}
