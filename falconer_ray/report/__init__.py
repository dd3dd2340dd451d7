"""What a run tells its user: report.json (`build`), report.html (`html`, `findings`,
`teacher`, `plots`, `templates/`)."""
