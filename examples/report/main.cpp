// taxon-report: writes (or rewrites) report.html for a run directory made by taxon-unicom, including runs made
// before taxon wrote reports; whatever such a run did not record is shown as "not recorded in this run".
//
//   taxon-report runs/unicom                       -> runs/unicom/report.html
//   taxon-report runs/unicom --output /tmp/r.html  -> elsewhere (links to the run's files stay valid)
//   taxon-report --compare runs/r10 runs/r1 runs/r01 --output sweep.html   -> one comparison page
//   taxon-report runs/sweep                        -> a sweep's report.html and sweep.csv (taxon-unicom --cluster-ratio A,B,C)
#include <taxon/report/report.hpp>

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"taxon-report: a self-contained HTML report (report.html) of a taxon run directory"};
  std::vector<std::string> run_dirs;
  std::string output, title, model = "after";
  bool compare = false;
  app.add_option("RUN_DIR", run_dirs, "run directory (several with --compare)")->required();
  app.add_option("--output", output, "where to write the report (default RUN_DIR/report.html)");
  app.add_option("--title", title, "report title (default: taxon run: <directory name>)");
  app.add_flag("--compare", compare, "one page comparing the runs' retrieval metrics (e.g. a cluster-ratio sweep)");
  app.add_option("--model", model, "with --compare: which evaluation of each run to compare (after, before, raw-pixels)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    std::filesystem::path written;
    if (compare) {
      TAXON_CHECK(!output.empty(), "cli.missing-option", "--compare needs --output FILE");
      std::vector<std::filesystem::path> dirs(run_dirs.begin(), run_dirs.end());
      written = taxon::report::write_comparison_report(dirs, output, title.empty() ? "taxon runs compared" : title, model);
    } else {
      TAXON_CHECK(run_dirs.size() == 1, "cli.bad-option", "one RUN_DIR at a time (or --compare for several), got ",
                  run_dirs.size());
      const auto sweep = taxon::report::sweep_of(taxon::report::read_run(run_dirs.front()));
      if (sweep) {  // a sweep's directory (taxon-unicom --cluster-ratio A,B,C): sweep.csv and the values compared
        TAXON_CHECK(output.empty(), "cli.bad-option", run_dirs.front(), " is a sweep: its report is written to ",
                    "RUN_DIR/report.html beside sweep.csv; --output is not supported there");
        written = taxon::report::write_sweep_report(run_dirs.front(), *sweep, title).report;
      } else {
        written = taxon::report::write_run_report(run_dirs.front(), taxon::report::ReportOptions().output(output).title(title));
      }
    }
    std::cout << "report: " << std::filesystem::absolute(written).lexically_normal().string() << "\n";
    return 0;
  } catch (const taxon::Error& e) {
    std::cerr << "taxon-report: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "taxon-report: unexpected error: " << e.what() << "\n";
    return 1;
  }
}
