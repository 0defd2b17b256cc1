"""How sure a score is: intervals, paired comparisons and multiplicity, from per-example scores.

Every metric keeps its per-example scores, so a split's value comes with a standard error and an
interval, and two methods scored on the same examples are compared pair by pair:

- a mean of per-example scores: :func:`~peftcore.stats.intervals.mean_interval` (Wilson for a
  proportion, normal otherwise); :func:`~peftcore.stats.paired.compare_scores` (exact McNemar for
  0/1 scores, paired t otherwise; paired bootstrap interval);
- a corpus metric that is not a mean (macro F1, corpus perplexity):
  :func:`~peftcore.stats.intervals.bootstrap_interval` and
  :func:`~peftcore.stats.paired.compare_corpus` over a vectorised statistic of resample weights
  (:func:`~peftcore.stats.intervals.weighted_mean`, :func:`~peftcore.stats.intervals.ratio_perplexity`,
  :func:`~peftcore.stats.intervals.macro_f1_statistic`);
- several training seeds of each side: :func:`~peftcore.stats.paired.compare_seeded` (seeds, then
  examples);
- many comparisons at once: :func:`~peftcore.stats.multiple.holm`,
  :func:`~peftcore.stats.multiple.benjamini_hochberg`;
- a CI gate that must not fail on noise: :func:`~peftcore.stats.regression.regression_p_value`.

    intervals   one metric on one split: critical values, the mean's interval, the bootstrap
                (resample weights, percentile interval) and the vectorised corpus statistics
    paired      method a against method b on the same examples, and the difference a test can
                detect (minimum_detectable_difference)
    multiple    adjusted p-values for many comparisons (Holm, Benjamini-Hochberg)
    regression  a CI gate's one-sided p-value that a drop is noise

A bootstrap is one ``(resamples, n)`` matrix of resample counts ``W``
(:func:`~peftcore.stats.intervals.bootstrap_weights`) and a statistic is a function of ``W``
computed with matrix products, so one resample is never a Python loop. Measured by hand on 2 busy
CPU cores: every metric of a 1,000-example split (three means, macro F1 over 4 classes, corpus
perplexity) with 1,000 resamples takes 0.07 to 0.2 s, and comparing two methods on all five 0.25
to 0.3 s; drawing the weights (10 to 20 ms a call) is the larger part.

Pure numpy; scipy is imported inside the functions that need it, so importing these modules (as
pytest collection does) stays cheap. The package itself re-exports nothing: import from the
module that does the work.
"""
