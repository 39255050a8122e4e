package config

import (
	"reflect"
)

// Secrets can be given as files, the way Docker and Kubernetes mount them
// (/run/secrets/NAME), so that they appear neither in the process's
// arguments, which every local user can read with ps, nor in its
// environment.
//
// The mechanism is one struct tag. A string field tagged
// `secretfile:"Target"` holds the path of a file whose contents become the
// Secret field Target; by convention its variable is Target's plus _FILE and
// its flag Target's plus -file:
//
//	APIKey     Secret `name:"api-key" env:"VERISOUL_API_KEY" …`
//	APIKeyFile string `name:"api-key-file" env:"VERISOUL_API_KEY_FILE" secretfile:"APIKey" …`
//
// A test checks that every Secret field has such a companion, so a new
// secret cannot be added without its file form.

// ReadSecretFiles reads every secret given as a file (the fields tagged
// secretfile) into its Secret field. One trailing newline ("\n" or "\r\n")
// is removed, as editors and `echo` add one; anything else is kept, and
// Validate then rejects what cannot be right.
//
// It returns an *Error naming the file's variable when the file cannot be
// read or is empty, or when the secret is also given directly (both
// VERISOUL_API_KEY and VERISOUL_API_KEY_FILE, in any mix of variables and
// flags): which one was meant cannot be known. Messages show the path, never
// the contents. Call it once, after the flags and variables are parsed.
func (c *Config) ReadSecretFiles() error {
	v := reflect.ValueOf(c).Elem()
	for f := range v.Type().Fields() {
		target, ok := f.Tag.Lookup("secretfile")
		if !ok {
			continue
		}
		path := v.FieldByIndex(f.Index).String()
		if path == "" {
			continue
		}
		secret := v.FieldByName(target)
		tf, _ := v.Type().FieldByName(target)
		if secret.String() != "" {
			return errorFor(f.Name, "set either it or %s (--%s), not both", tf.Tag.Get("env"), tf.Tag.Get("name"))
		}
		s, err := readSecretFile(path)
		if err != nil {
			return errorFor(f.Name, "%v", err)
		}
		secret.SetString(string(s))
	}
	return nil
}
