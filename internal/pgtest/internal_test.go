package pgtest

import (
	"strings"
	"testing"
)

// Without the Postgres programs, the tests fail and say what to install.
func TestMissingPostgresSaysWhatToInstall(t *testing.T) {
	old := binGlob
	binGlob = "/nonexistent/postgresql/*/bin"
	defer func() { binGlob = old }()
	t.Setenv("PATH", t.TempDir())
	_, err := Start()
	if err == nil {
		t.Fatal("Start succeeded without the Postgres programs")
	}
	for _, want := range []string{"apt-get install postgresql", SkipVariable + "=1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
