package config

import (
	"os"
	"reflect"
)

// UnsetEmptyEnv treats an empty setting variable as unset, so that
// `ENROLLQ_RATE_LIMIT=` (as docker-compose writes for `${X:-}`) means the
// default rather than a parse error. Call it before parsing the settings.
func UnsetEmptyEnv() {
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("env"); name != "" {
			if v, ok := os.LookupEnv(name); ok && v == "" {
				_ = os.Unsetenv(name)
			}
		}
	}
}
