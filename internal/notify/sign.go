package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of every webhook request.
const (
	SignatureHeader = "Conveyor-Signature"
	EventIDHeader   = "Conveyor-Event-Id"
	EventTypeHeader = "Conveyor-Event-Type"
	// EventType is the only event type so far.
	EventType = "job.state_change"
)

// DefaultTolerance is how old a signature's timestamp Verify accepts.
const DefaultTolerance = 5 * time.Minute

// Sign returns the Conveyor-Signature header of body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<unix seconds>." + body)>".
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret []byte, ts string, body []byte) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// Errors of Verify.
var (
	ErrBadSignature = errors.New("webhook signature does not match: wrong secret, or the body was changed")
	ErrStale        = errors.New("webhook signature is too old or from the future: a replay, or the clocks differ")
)

// Verify checks a Conveyor-Signature header against body, for a receiver
// written in Go: the HMAC must match (compared in constant time) and the
// timestamp must be within tolerance of now (DefaultTolerance when
// zero). Several v1= entries are allowed; one matching is enough.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("malformed %s header %q: want t=<unix seconds>,v1=<hex>", SignatureHeader, header)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := []byte(mac(secret, ts, body))
	for _, s := range sigs {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrBadSignature
}
