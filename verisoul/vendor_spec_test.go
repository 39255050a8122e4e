package verisoul_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// The vendor's published OpenAPI descriptions the project keeps a copy of in
// testdata/. The tests must not read anything outside the repository, so the
// copies are checked against the SHA-256 of the published files, taken when
// they were copied. A new version from the vendor means: copy it in, run the
// contract tests, and update the digest here in the same commit.
const (
	enrollSpecFile = "facematch-enroll.openapi.yaml"
	deleteSpecFile = "account-delete.openapi.yaml"
)

var publishedSpecSHA256 = map[string]string{
	enrollSpecFile: "768909e5747c5a7dbf053fd087807872f7357c40b19074345cd9877d8302a480",
	deleteSpecFile: "472a8d6e0ca99e9d73b2350d09b70b9d066580ffaa8e0cf98ebcbb0f66820497",
}

// envVendorSpecDir names a directory holding the vendor's published files
// (as downloaded from its docs). When set, the copies in testdata/ must
// equal them byte for byte; when unset, only the pinned digests are checked.
const envVendorSpecDir = "ENROLLQ_VENDOR_OPENAPI_DIR"

// TestVendorSpecCopiesArePublishedBytes keeps testdata/ honest: each copy
// hashes to the digest of the published file.
func TestVendorSpecCopiesArePublishedBytes(t *testing.T) {
	t.Parallel()
	for name, want := range publishedSpecSHA256 {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Errorf("the copy of the vendor's %s is missing: %v", name, err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("testdata/%s has SHA-256 %s, the published file %s: it was edited, or the vendor's new version was copied without updating the pinned digest", name, got, want)
		}
	}
}

// TestVendorSpecCopiesMatchDirectory compares the copies byte for byte with
// the vendor's files in ENROLLQ_VENDOR_OPENAPI_DIR, when it is set.
func TestVendorSpecCopiesMatchDirectory(t *testing.T) {
	t.Parallel()
	dir := os.Getenv(envVendorSpecDir)
	if dir == "" {
		t.Skipf("%s is not set: the copies are checked against their pinned SHA-256 only", envVendorSpecDir)
	}
	for name := range publishedSpecSHA256 {
		published, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s=%s: %v", envVendorSpecDir, dir, err)
			continue
		}
		copied, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Errorf("the copy of %s is missing: %v", name, err)
			continue
		}
		if !bytes.Equal(published, copied) {
			t.Errorf("testdata/%s differs from %s (%d bytes vs %d): copy the published file in and update its pinned digest", name, filepath.Join(dir, name), len(copied), len(published))
		}
	}
}
