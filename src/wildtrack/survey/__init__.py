"""A field day end to end: a card of photos → encounters → verdicts → review → enrolment → sightings.

``run`` turns a folder of photos into encounters identified against the catalogue (``survey.json``,
``photos.csv``, ``decisions.csv``, ``review.html``); a person edits the decisions; ``apply`` enrols the accepted
photos in one crash-safe commit and writes the sightings; ``history`` turns the catalogue's sightings into a
capture history. The folder's files and their formats are in :mod:`wildtrack.survey.files`.
"""
