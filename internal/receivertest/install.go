package receivertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/enrollq/enrollq/examples/receivers"
)

// StandardwebhooksNPM is the version of npm's standardwebhooks the Node
// receiver verifies with. It is not a dependency of the project: the first
// run installs it into the user's cache directory.
const StandardwebhooksNPM = "1.1.1"

var (
	npmOnce sync.Once
	npmLib  string
	npmErr  error
)

// nodeModules links dir/node_modules to a copy of npm's standardwebhooks,
// installed once per machine into the user's cache directory (so that a
// later offline run, such as CI's fresh-clone step, finds it). Without
// node and npm it installs Debian's when it can (root).
func nodeModules(dir string) error {
	npmOnce.Do(func() { npmLib, npmErr = installNPM() })
	if npmErr != nil {
		return npmErr
	}
	return os.Symlink(filepath.Join(npmLib, "node_modules"), filepath.Join(dir, "node_modules"))
}

func installNPM() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	lib := filepath.Join(cache, "enrollq-test", "standardwebhooks-"+StandardwebhooksNPM)
	if _, err := os.Stat(filepath.Join(lib, "node_modules", "standardwebhooks", "package.json")); err == nil {
		if _, err := exec.LookPath("node"); err != nil {
			return "", fmt.Errorf("node is not on PATH (apt-get install nodejs)")
		}
		return lib, nil
	}
	if _, err := exec.LookPath("npm"); err != nil && os.Geteuid() == 0 {
		out, err := exec.Command("sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("apt-get install nodejs npm: %v\n%s", err, out)
		}
	}
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(lib), "install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "standardwebhooks@"+StandardwebhooksNPM)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, lib); err != nil && !os.IsExist(err) {
		if _, serr := os.Stat(lib); serr != nil { // not another process's install
			return "", err
		}
	}
	return lib, nil
}

// goReceiver builds the Go receiver into dir (go build, from the module
// the test runs in; the build cache makes it a link) and returns the
// binary's path.
func goReceiver(dir string) (string, error) {
	bin := filepath.Join(dir, "goreceiver")
	if out, err := exec.Command("go", "build", "-o", bin, receivers.GoPackage).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", receivers.GoPackage, err, out)
	}
	return bin, nil
}
