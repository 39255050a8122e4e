package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestREADMEArchitectureListsEveryPackage keeps the README's map true: every
// package of the module is listed under Architecture → Packages by its
// directory (or a parent directory's line, like internal/bench/).
func TestREADMEArchitectureListsEveryPackage(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Architecture\n")
	if !ok {
		t.Fatal("README.md has no ## Architecture section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, list, ok := strings.Cut(section, "\n### Packages\n")
	if !ok {
		t.Fatal("README.md's Architecture has no ### Packages list")
	}
	var listed []string
	for _, line := range strings.Split(list, "\n") {
		if dir, _, ok := strings.Cut(line, "/ "); ok && !strings.Contains(dir, " ") {
			listed = append(listed, dir+"/")
		}
	}
	cmd := exec.Command("go", "list", "-f", "{{.Dir}}", "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root = strings.TrimSuffix(root, "/cmd/enrollq")
	for _, dir := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(dir, root+"/") + "/"
		found := false
		for _, l := range listed {
			if strings.HasPrefix(rel, l) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("package %s is not in the README's Architecture → Packages list", strings.TrimSuffix(rel, "/"))
		}
	}
}
