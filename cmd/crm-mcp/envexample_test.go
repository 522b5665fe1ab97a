package main

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEnvExampleDocumentsEveryVariable keeps the committed .env.example,
// which compose.yaml's users start from, in step with config: every
// variable config reads is there, nothing else is, and the required ones
// are set (to empty, so that a forgotten one stops the server naming it).
func TestEnvExampleDocumentsEveryVariable(t *testing.T) {
	b, err := os.ReadFile("../../.env.example")
	require.NoError(t, err)
	line := regexp.MustCompile(`^(# )?([A-Z][A-Z0-9_]*)=`)
	documented := map[string]bool{} // name -> set (not commented out)
	for _, l := range strings.Split(string(b), "\n") {
		if m := line.FindStringSubmatch(l); m != nil {
			_, seen := documented[m[2]]
			assert.False(t, seen, "%s appears twice", m[2])
			documented[m[2]] = m[1] == ""
		}
	}
	for _, name := range knownVariables() {
		_, ok := documented[name]
		assert.True(t, ok, "%s is read by config but missing from .env.example", name)
	}
	for name := range documented {
		assert.True(t, slices.Contains(knownVariables(), name), "%s is in .env.example but nothing reads it", name)
	}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[config]()) {
		name, opts, _ := strings.Cut(f.Tag.Get("env"), ",")
		if strings.Contains(opts, "required") {
			assert.True(t, documented[name], "%s is required: .env.example must set it (to empty)", name)
		}
	}
}
