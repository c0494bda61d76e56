"""Reports assembled from finished runs' workdirs (the pipeline's report.md): above every
package they report on, below jobs/."""
