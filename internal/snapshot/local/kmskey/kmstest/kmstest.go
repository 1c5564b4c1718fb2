// Package kmstest is a fake AWS KMS endpoint for tests, speaking KMS's
// wire protocol (AWS JSON 1.1: POST /, X-Amz-Target TrentService.<Op>,
// SigV4 signed for "kms"), so that the real SDK client talks to it. It
// answers Encrypt and Decrypt honestly: each key has its own random
// secret, a ciphertext is sealed with it (AES-GCM) over the encryption
// context, Decrypt checks the key asked for, the context and the
// ciphertext, and unknown, disabled, pending-deletion and denied keys fail
// with KMS's own error types.
package kmstest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// Credentials and place of the fake.
const (
	AccessKey = "AKIDCONVEYORKMSTEST"
	Region    = "us-east-1"
	Account   = "111122223333"
)

// Key is one KMS key of the fake.
type Key struct {
	ID    string // a key ID; its ARN is made from Region and Account
	Alias string // "alias/name", or ""
	// Disabled keys fail with DisabledException; PendingDeletion ones
	// with KMSInvalidStateException; Denied ones with
	// AccessDeniedException (the caller has no grant on them).
	Disabled, PendingDeletion, Denied bool
}

// Call is one request the fake answered.
type Call struct {
	Op      string // "Encrypt", "Decrypt"
	KeyID   string // as the request gave it
	Context map[string]string
}

// Server is a running fake.
type Server struct {
	URL string

	t    testing.TB
	mu   sync.Mutex
	keys map[string]*key // by key ID
	// aliases maps "alias/name" to a key ID.
	aliases map[string]string
	calls   []Call
}

type key struct {
	Key
	secret []byte
}

// New starts a fake with keys; it is closed when the test ends.
func New(t testing.TB, keys ...Key) *Server {
	s := &Server{t: t, keys: map[string]*key{}, aliases: map[string]string{}}
	for _, k := range keys {
		if k.ID == "" || s.keys[k.ID] != nil {
			t.Fatalf("kmstest: key ID %q is empty or given twice", k.ID)
		}
		secret := make([]byte, 32)
		rand.Read(secret)
		s.keys[k.ID] = &key{Key: k, secret: secret}
		if k.Alias != "" {
			s.aliases[k.Alias] = k.ID
		}
	}
	srv := httptest.NewServer(s)
	s.URL = srv.URL
	t.Cleanup(srv.Close)
	return s
}

// ARN is the ARN of key ID id.
func ARN(id string) string { return "arn:aws:kms:" + Region + ":" + Account + ":key/" + id }

// Client returns an SDK client pointed at the fake, without retries.
func (s *Server) Client() *kms.Client {
	return kms.New(kms.Options{
		Region: Region, BaseEndpoint: aws.String(s.URL),
		Credentials: credentials.NewStaticCredentialsProvider(AccessKey, "secret", ""),
		Retryer:     retry.AddWithMaxAttempts(retry.NewStandard(), 1),
	})
}

// Set changes a key's flags (Disabled, PendingDeletion, Denied).
func (s *Server) Set(id string, fn func(*Key)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&s.keys[id].Key)
}

// Calls returns the requests answered so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// request is the body of Encrypt and Decrypt (the fields used).
type request struct {
	KeyId               string
	Plaintext           []byte
	CiphertextBlob      []byte
	EncryptionContext   map[string]string
	EncryptionAlgorithm string
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	auth := r.Header.Get("Authorization")
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/":
		s.t.Errorf("kmstest: %s %s: KMS takes POST /", r.Method, r.URL.Path)
	case r.Header.Get("Content-Type") != "application/x-amz-json-1.1":
		s.t.Errorf("kmstest: Content-Type %q, want application/x-amz-json-1.1", r.Header.Get("Content-Type"))
	case !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential="+AccessKey+"/") || !strings.Contains(auth, "/"+Region+"/kms/aws4_request"):
		fail(w, 400, "UnrecognizedClientException", "request not signed with SigV4 for kms in "+Region)
		return
	}
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		fail(w, 400, "SerializationException", err.Error())
		return
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, Call{Op: op, KeyID: req.KeyId, Context: req.EncryptionContext})
	switch {
	case ok && op == "Encrypt":
		s.encrypt(w, req)
	case ok && op == "Decrypt":
		s.decrypt(w, req)
	default:
		fail(w, 400, "UnknownOperationException", "kmstest answers TrentService.Encrypt and TrentService.Decrypt, not "+r.Header.Get("X-Amz-Target"))
	}
}

// resolve finds a key by ID, ARN, alias name or alias ARN.
func (s *Server) resolve(id string) *key {
	id = strings.TrimPrefix(id, "arn:aws:kms:"+Region+":"+Account+":")
	id = strings.TrimPrefix(id, "key/")
	if k := s.aliases[id]; k != "" {
		id = k
	}
	return s.keys[id]
}

// usable answers the error of a key that cannot be used, and reports
// whether it can.
func usable(w http.ResponseWriter, k *key, given string) bool {
	switch {
	case k == nil:
		fail(w, 400, "NotFoundException", fmt.Sprintf("Key '%s' does not exist", given))
	case k.Denied:
		fail(w, 400, "AccessDeniedException", fmt.Sprintf("User: arn:aws:sts::%s:assumed-role/test is not authorized to perform this operation on %s because no identity-based policy allows it", Account, ARN(k.ID)))
	case k.PendingDeletion:
		fail(w, 400, "KMSInvalidStateException", fmt.Sprintf("%s is pending deletion.", ARN(k.ID)))
	case k.Disabled:
		fail(w, 400, "DisabledException", fmt.Sprintf("%s is disabled.", ARN(k.ID)))
	default:
		return true
	}
	return false
}

// The ciphertext: magic, key ID length and key ID, nonce, then AES-GCM of
// the plaintext with the encryption context as additional data.
const magic = "kmstest1"

func aad(ec map[string]string) []byte {
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%q=%q;", k, ec[k])
	}
	return b.Bytes()
}

func (k *key) aead() cipher.AEAD {
	block, _ := aes.NewCipher(k.secret)
	g, _ := cipher.NewGCM(block)
	return g
}

func (s *Server) encrypt(w http.ResponseWriter, req request) {
	k := s.resolve(req.KeyId)
	if req.KeyId == "" {
		fail(w, 400, "ValidationException", "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
		return
	}
	if !usable(w, k, req.KeyId) {
		return
	}
	if len(req.Plaintext) == 0 || len(req.Plaintext) > 4096 {
		fail(w, 400, "ValidationException", "Plaintext must be 1 to 4096 bytes")
		return
	}
	g := k.aead()
	blob := append([]byte(magic), byte(len(k.ID)))
	blob = append(blob, k.ID...)
	nonce := make([]byte, g.NonceSize())
	rand.Read(nonce)
	blob = append(blob, nonce...)
	blob = g.Seal(blob, nonce, req.Plaintext, aad(req.EncryptionContext))
	reply(w, map[string]any{"CiphertextBlob": blob, "KeyId": ARN(k.ID), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
}

func (s *Server) decrypt(w http.ResponseWriter, req request) {
	b := req.CiphertextBlob
	if !bytes.HasPrefix(b, []byte(magic)) || len(b) < len(magic)+1 || len(b) < len(magic)+1+int(b[len(magic)]) {
		fail(w, 400, "InvalidCiphertextException", "")
		return
	}
	n := int(b[len(magic)])
	id := string(b[len(magic)+1 : len(magic)+1+n])
	b = b[len(magic)+1+n:]
	k := s.keys[id]
	if k == nil {
		fail(w, 400, "InvalidCiphertextException", "")
		return
	}
	if req.KeyId != "" {
		asked := s.resolve(req.KeyId)
		if asked == nil {
			fail(w, 400, "NotFoundException", fmt.Sprintf("Key '%s' does not exist", req.KeyId))
			return
		}
		if asked != k {
			fail(w, 400, "IncorrectKeyException", "The key ID in the request does not identify a KMS key that can perform this operation.")
			return
		}
	}
	if !usable(w, k, id) {
		return
	}
	g := k.aead()
	if len(b) < g.NonceSize() {
		fail(w, 400, "InvalidCiphertextException", "")
		return
	}
	plain, err := g.Open(nil, b[:g.NonceSize()], b[g.NonceSize():], aad(req.EncryptionContext))
	if err != nil {
		// A wrong encryption context or altered bytes: KMS says no more.
		fail(w, 400, "InvalidCiphertextException", "")
		return
	}
	reply(w, map[string]any{"Plaintext": plain, "KeyId": ARN(k.ID), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("x-amzn-RequestId", fmt.Sprintf("kmstest-%d", time.Now().UnixNano()))
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("x-amzn-RequestId", fmt.Sprintf("kmstest-%d", time.Now().UnixNano()))
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
}
