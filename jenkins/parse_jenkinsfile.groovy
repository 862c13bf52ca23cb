// Offline syntax check of Jenkinsfiles (make validate-stack): parses (compiles, does not run) each file
// given with Debian's groovy; a syntax error exits 1 with line and column. Steps and directives are
// not resolved here (that needs Jenkins' own linter, docs/deploy.md), but every brace, quote and call is.
def failed = false
args.each { path ->
  try {
    new GroovyShell().parse(new File(path))
    println "groovy syntax OK: ${path}"
  } catch (org.codehaus.groovy.control.MultipleCompilationErrorsException e) {
    failed = true
    System.err.println "groovy syntax error in ${path}:\n${e.message}"
  }
}
System.exit(failed ? 1 : 0)
