"""Building blocks every stage uses: errors, atomic writes, the console, validation of values at a
boundary, running statistics, prompt lists, hashes and the documented defaults. Imports nothing
else of neurosteer."""
