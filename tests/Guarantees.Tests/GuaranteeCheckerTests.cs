using System.Diagnostics;
using Xunit.Abstractions;

namespace OrleansPush.Guarantees.Tests;

/// <summary>
/// The fault-injection checker (issue 10): seeded schedules of faults at every seam we own, each judged by
/// <see cref="Checker"/>. <c>ORLEANSPUSH_CHECKER_SCHEDULES</c> sets how many schedules run (seeds 1..N; a few by
/// default, so the suite stays within its time), <c>ORLEANSPUSH_CHECKER_SEED</c> replays one seed, and
/// <c>ORLEANSPUSH_CHECKER_FIRST_SEED</c> starts the range elsewhere.
/// </summary>
public sealed class GuaranteeCheckerTests(ITestOutputHelper output)
{
    public const int DefaultSchedules = 4;

    [Fact]
    public async Task SeededFaultSchedulesKeepEveryGuarantee()
    {
        var seeds = Seeds();
        var failures = new List<ScheduleResult>();
        var clock = Stopwatch.StartNew();
        foreach (var seed in seeds)
        {
            var result = await Schedule.RunAsync(seed);
            output.WriteLine($"seed {seed}: {(result.Violations.Count == 0 ? "ok" : result.Violations.Count + " violation(s)")}; {result.Summary}");
            if (result.Violations.Count > 0)
            {
                failures.Add(result);
                output.WriteLine(result.Report());
            }
        }

        output.WriteLine($"{seeds.Count} schedule(s) in {clock.Elapsed.TotalSeconds:0} s, {failures.Count} failed");
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures.Select(f => f.Report())));
    }

    private static List<int> Seeds()
    {
        if (int.TryParse(Environment.GetEnvironmentVariable("ORLEANSPUSH_CHECKER_SEED"), out var one))
        {
            return [one];
        }

        var count = int.TryParse(Environment.GetEnvironmentVariable("ORLEANSPUSH_CHECKER_SCHEDULES"), out var n) && n > 0 ? n : DefaultSchedules;
        var first = int.TryParse(Environment.GetEnvironmentVariable("ORLEANSPUSH_CHECKER_FIRST_SEED"), out var f) ? f : 1;
        return Enumerable.Range(first, count).ToList();
    }
}
