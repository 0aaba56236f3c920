// Package docs holds no code: its tests keep the documents in this
// directory, README.md and the other Markdown files honest. Every relative link resolves to a file
// in the repository, every test a document names as TestXxx exists, every
// shipped plugin has its configuration reference in plugins.md (which the
// plugin's own TestConfigReference keeps current), nothing in the
// repository points outside it, and the packages keep the dependency rule
// of architecture.md.
package docs
