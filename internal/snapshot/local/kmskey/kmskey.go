package kmskey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/conveyorhq/conveyor/internal/snapshot"
	"github.com/conveyorhq/conveyor/internal/snapshot/local"
)

// Kind is what key objects wrapped by KMS say they are.
const Kind = "aws-kms"

// ContextKey is the encryption context key that names the repository (its
// ID) in every Encrypt and Decrypt: a key object copied into another
// repository does not decrypt there, and CloudTrail shows which repository
// each call was for.
const ContextKey = "conveyor-snapshot-repository"

// Wrapper wraps repository master keys with one KMS key.
type Wrapper struct {
	client *kms.Client
	keyID  string
}

var _ local.KeyWrapper = (*Wrapper)(nil)

// New returns a Wrapper that encrypts with keyID (a key ID, key ARN,
// alias name "alias/..." or alias ARN) through client, and decrypts only
// what that key encrypted.
func New(client *kms.Client, keyID string) *Wrapper {
	return &Wrapper{client: client, keyID: keyID}
}

// wrapped is what a key object stores.
type wrapped struct {
	// KeyID is the ARN of the key that encrypted, as KMS returned it:
	// for a person (and the error message) when another key is given.
	KeyID string `json:"key_id"`
	// Ciphertext is KMS's CiphertextBlob of the master key.
	Ciphertext []byte `json:"ciphertext"`
}

// Kind implements local.KeyWrapper.
func (w *Wrapper) Kind() string { return Kind }

func encryptionContext(repo string) map[string]string {
	return map[string]string{ContextKey: repo}
}

// Wrap implements local.KeyWrapper: KMS Encrypt of master under the key.
func (w *Wrapper) Wrap(ctx context.Context, repo string, master []byte) (json.RawMessage, error) {
	if w.keyID == "" {
		return nil, errors.New("snapshot.kms_key is empty")
	}
	out, err := w.client.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(w.keyID), Plaintext: master, EncryptionContext: encryptionContext(repo)})
	if err != nil {
		return nil, w.explain("kms:Encrypt", err, "")
	}
	return json.Marshal(wrapped{KeyID: aws.ToString(out.KeyId), Ciphertext: out.CiphertextBlob})
}

// Unwrap implements local.KeyWrapper: KMS Decrypt, naming the configured
// key, so that a master key wrapped by another key is refused (an error
// wrapping snapshot.ErrWrongKey that names the key it needs).
func (w *Wrapper) Unwrap(ctx context.Context, repo string, stored json.RawMessage) ([]byte, error) {
	var k wrapped
	if err := json.Unmarshal(stored, &k); err != nil || len(k.Ciphertext) == 0 {
		return nil, fmt.Errorf("a key object of kind %s holds no KMS ciphertext (%v): it is damaged", Kind, err)
	}
	out, err := w.client.Decrypt(ctx, &kms.DecryptInput{KeyId: aws.String(w.keyID), CiphertextBlob: k.Ciphertext, EncryptionContext: encryptionContext(repo)})
	if err != nil {
		return nil, w.explain("kms:Decrypt", err, k.KeyID)
	}
	return out.Plaintext, nil
}

// keyRef names a key as enable-key and cancel-key-deletion take it (an ID
// or key ARN, not an alias): the ARN a key object recorded, else the
// configured name when it is no alias.
func keyRef(configured, wrappedBy string) string {
	if wrappedBy != "" {
		return wrappedBy
	}
	if strings.HasPrefix(configured, "alias/") || strings.Contains(configured, ":alias/") {
		return "\"$(aws kms describe-key --key-id " + configured + " --query KeyMetadata.Arn --output text)\""
	}
	return configured
}

// wrongKey is an error that is snapshot.ErrWrongKey with its own words.
type wrongKey struct{ msg string }

func (e wrongKey) Error() string        { return e.msg }
func (e wrongKey) Is(target error) bool { return target == snapshot.ErrWrongKey }

// explain turns a KMS error into what the operator should do. wrappedBy
// is the ARN of the key that wrapped the master key, when known.
func (w *Wrapper) explain(op string, err error, wrappedBy string) error {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return fmt.Errorf("%s with KMS key %s: %w", op, w.keyID, err)
	}
	switch ae.ErrorCode() {
	case "IncorrectKeyException":
		return wrongKey{fmt.Sprintf("the snapshot repository's key was wrapped by KMS key %s, not by snapshot.kms_key %s: set snapshot.kms_key (CONVEYOR_SNAPSHOT_KMS_KEY) to the key the repository was created with", wrappedBy, w.keyID)}
	case "InvalidCiphertextException":
		return wrongKey{fmt.Sprintf("KMS refuses the wrapped key (%s): it belongs to another snapshot repository (the encryption context names another) or is damaged; a copy of the repository's keys/ object from a backup is the way back", ae.ErrorMessage())}
	case "AccessDeniedException":
		return fmt.Errorf("KMS denies %s on key %s to these credentials (%s): grant the role kms:Encrypt and kms:Decrypt on that key only (the README shows the policy), or set snapshot.kms_key to a key it may use", op, w.keyID, ae.ErrorMessage())
	case "DisabledException":
		return fmt.Errorf("KMS key %s is disabled (%s): enable it (aws kms enable-key --key-id %s); until then the snapshots it wraps cannot be read or written", w.keyID, ae.ErrorMessage(), keyRef(w.keyID, wrappedBy))
	case "KMSInvalidStateException":
		return fmt.Errorf("KMS key %s cannot be used in its state (%s): if it is pending deletion, cancel that now (aws kms cancel-key-deletion --key-id %s): once deleted, every snapshot it wraps is lost", w.keyID, ae.ErrorMessage(), keyRef(w.keyID, wrappedBy))
	case "NotFoundException":
		return fmt.Errorf("KMS key %s does not exist in this account and region (%s): check snapshot.kms_key and the region (AWS_REGION)", w.keyID, ae.ErrorMessage())
	case "InvalidKeyUsageException":
		return fmt.Errorf("KMS key %s cannot encrypt and decrypt (%s): use a symmetric ENCRYPT_DECRYPT key", w.keyID, ae.ErrorMessage())
	}
	return fmt.Errorf("%s with KMS key %s: %w", op, w.keyID, err)
}
