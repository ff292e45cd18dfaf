"""Comparing a query with catalogue photos beyond the global cosine: pairwise matchers, the shortlist they look
at, the calibration that turns their evidence into a match probability, and applying or fitting it.

* :mod:`~wildtrack.matching.ransac` - a matcher: ratio-test correspondences counted as RANSAC inliers;
* :mod:`~wildtrack.matching.reranker` - one query against a list of catalogue photos (features from the cache);
* :mod:`~wildtrack.matching.shortlist` - which photos each query's matcher sees (global top ``k``);
* :mod:`~wildtrack.matching.collect` - inlier counts of many queries' shortlists at once (evaluation, fitting);
* :mod:`~wildtrack.matching.calibration` - cosine + inliers → one monotone probability (``ScoreFusion``);
* :mod:`~wildtrack.matching.fusion` - applying it to shortlists, with identity support;
* :mod:`~wildtrack.matching.gallery_fusion` - the fitted whole as ``fusion.json`` stores it;
* :mod:`~wildtrack.matching.rerank` - re-ranking one query's hits (the CLI's and the service's path);
* :mod:`~wildtrack.matching.fit` - fitting it on a catalogue (never imported by a server).
"""
