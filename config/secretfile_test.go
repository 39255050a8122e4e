package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestEverySecretHasAFileForm keeps the mechanism whole: each Secret field
// has one companion tagged secretfile, named and spelt by the convention,
// so a secret added later cannot miss its _FILE form.
func TestEverySecretHasAFileForm(t *testing.T) {
	t.Parallel()
	typ := reflect.TypeFor[Config]()
	companions := map[string]reflect.StructField{}
	for f := range typ.Fields() {
		target, ok := f.Tag.Lookup("secretfile")
		if !ok {
			continue
		}
		tf, found := typ.FieldByName(target)
		switch {
		case !found || tf.Type != reflect.TypeFor[Secret]():
			t.Errorf("%s: secretfile names %q, which is not a Secret field", f.Name, target)
			continue
		case f.Type.Kind() != reflect.String:
			t.Errorf("%s: a secretfile field holds a path, a string; it is %s", f.Name, f.Type)
		case f.Tag.Get("env") != tf.Tag.Get("env")+"_FILE" || f.Tag.Get("name") != tf.Tag.Get("name")+"-file":
			t.Errorf("%s: want env %s_FILE and flag --%s-file, got %s and --%s", f.Name, tf.Tag.Get("env"), tf.Tag.Get("name"), f.Tag.Get("env"), f.Tag.Get("name"))
		}
		if _, dup := companions[target]; dup {
			t.Errorf("%s has two file forms", target)
		}
		companions[target] = f
	}
	for f := range typ.Fields() {
		if f.Type == reflect.TypeFor[Secret]() {
			if _, ok := companions[f.Name]; !ok {
				t.Errorf("secret %s (%s) has no %s_FILE form: add a string field tagged secretfile:%q", f.Name, f.Tag.Get("env"), f.Tag.Get("env"), f.Name)
			}
		}
	}
}

func writeSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadSecretFiles(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, content, want string
	}{
		{"as written by echo", testKey + "\n", testKey},
		{"CRLF", testKey + "\r\n", testKey},
		{"no newline", testKey, testKey},
		{"only one newline is removed", testKey + "\n\n", testKey + "\n"},
	} {
		c := Default()
		c.APIKeyFile = writeSecret(t, tt.content)
		c.DashboardPasswordFile = writeSecret(t, testPassword+"\n")
		if err := c.ReadSecretFiles(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if c.APIKey.Reveal() != tt.want || c.DashboardPassword.Reveal() != testPassword {
			t.Errorf("%s: got a key of %d bytes and a password of %d, want %d and %d", tt.name, len(c.APIKey.Reveal()), len(c.DashboardPassword.Reveal()), len(tt.want), len(testPassword))
		}
		// Read from a file, the secrets stay Secrets: redacted everywhere.
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
		assertNoSecret(t, tt.name+": slog", buf.String())
		assertNoSecret(t, tt.name+": fmt", fmt.Sprintf("%v %+v %#v %s", c, c, c, c))
	}

	// What is left after the one newline is Validate's to judge.
	c := Default()
	c.APIKeyFile = writeSecret(t, testKey+"\n\n")
	if err := c.ReadSecretFiles(); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateWorker(); err == nil || !strings.Contains(err.Error(), "whitespace") {
		t.Errorf("a key with a second newline: ValidateWorker = %v, want the whitespace rule", err)
	}
}

func TestReadSecretFilesErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	for _, tt := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"missing file", func(c *Config) { c.APIKeyFile = missing },
			"VERISOUL_API_KEY_FILE (--api-key-file): cannot read the secret: open " + missing + ": no such file or directory"},
		{"a directory", func(c *Config) { c.DashboardPasswordFile = dir },
			"ENROLLQ_DASHBOARD_PASSWORD_FILE (--dashboard-password-file): cannot read the secret: read " + dir + ": is a directory"},
		{"empty file", func(c *Config) { c.APIKeyFile = writeSecret(t, "\n") },
			"VERISOUL_API_KEY_FILE (--api-key-file): file "},
		{"both", func(c *Config) { c.APIKey = testKey; c.APIKeyFile = writeSecret(t, testKey) },
			"VERISOUL_API_KEY_FILE (--api-key-file): set either it or VERISOUL_API_KEY (--api-key), not both"},
		{"both, dashboard", func(c *Config) {
			c.DashboardPassword = testPassword
			c.DashboardPasswordFile = writeSecret(t, testPassword)
		},
			"ENROLLQ_DASHBOARD_PASSWORD_FILE (--dashboard-password-file): set either it or ENROLLQ_DASHBOARD_PASSWORD (--dashboard-password), not both"},
	} {
		c := Default()
		tt.set(&c)
		err := c.ReadSecretFiles()
		var cerr *Error
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.As(err, &cerr) {
			t.Errorf("%s: got %v, want an *Error starting %q", tt.name, err, tt.want)
			continue
		}
		assertNoSecret(t, tt.name, err.Error())
	}
}

// TestSecretFileFromEnv: the _FILE variable reaches ReadSecretFiles through
// kong like every setting.
func TestSecretFileFromEnv(t *testing.T) {
	clearEnv(t)
	t.Setenv("VERISOUL_API_KEY_FILE", writeSecret(t, testKey+"\n"))
	c, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ReadSecretFiles(); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateWorker(); err != nil || c.APIKey.Reveal() != testKey {
		t.Errorf("key from VERISOUL_API_KEY_FILE: %v, %d bytes", err, len(c.APIKey.Reveal()))
	}
}
