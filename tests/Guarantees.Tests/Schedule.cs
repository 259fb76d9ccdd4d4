using System.Diagnostics;
using System.Text;
using OrleansPush.Grains.History;

namespace OrleansPush.Guarantees.Tests;

/// <summary>What one schedule came to.</summary>
public sealed record ScheduleResult(int Seed, string Summary, IReadOnlyList<string> Violations, IReadOnlyList<string> Log)
{
    public string Report()
    {
        var text = new StringBuilder();
        text.AppendLine($"seed {Seed}: {Violations.Count} violation(s). Replay with ORLEANSPUSH_CHECKER_SEED={Seed}.");
        text.AppendLine(Summary);
        foreach (var v in Violations.Take(20))
        {
            text.AppendLine("  " + v);
        }

        text.AppendLine("last events:");
        foreach (var e in Log)
        {
            text.AppendLine("  " + e);
        }

        return text.ToString();
    }
}

/// <summary>
/// One seeded schedule: a fresh cluster, faults drawn from the seed, publishers and misbehaving subscribers for a
/// bounded active phase, disruptions (silo kill and restart, gateway loss) at moments drawn from the seed; then the
/// faults stop, everyone settles (bounded), and the <see cref="Checker"/> judges what was seen.
/// </summary>
public static class Schedule
{
    /// <summary>How long publishers publish and faults fire.</summary>
    public static readonly TimeSpan ActivePhase = TimeSpan.FromSeconds(5);

    /// <summary>How long the settled schedule may take to deliver what it owes (lease renewals repair lost tails).</summary>
    public static readonly TimeSpan SettleLimit = TimeSpan.FromSeconds(30);

    /// <summary>Runs schedule <paramref name="seed"/>. A schedule that cannot run to its check (the cluster did not
    /// start, a final read failed) is reported like a violation, with its seed and events.</summary>
    public static async Task<ScheduleResult> RunAsync(int seed)
    {
        var journal = new Journal();
        try
        {
            return await RunAsync(seed, journal);
        }
        catch (Exception ex)
        {
            journal.Add($"schedule failed: {ex}");
            return new ScheduleResult(seed, "the schedule did not run to its check", [$"schedule error: {ex.GetType().Name}: {ex.Message}"], journal.Tail(50));
        }
    }

    private static async Task<ScheduleResult> RunAsync(int seed, Journal journal)
    {
        var random = new Random(seed);
        var rates = DrawRates(random);
        var plan = new FaultPlan(seed, rates, journal);
        const int silos = 2;
        const int gateways = 2;
        var topics = new[] { $"ckl:a{seed}", $"ckl:b{seed}", $"ckl:c{seed}", $"cks:d{seed}", $"cks:e{seed}" };
        var disruptions = DrawDisruptions(random);
        var sharedStore = random.NextDouble() < 0.6;
        journal.Add($"schedule {seed}: faults {rates}; {disruptions}; {(sharedStore ? "one store" : "a store per silo")}");
        var clock = Stopwatch.StartNew();

        await using var cluster = await CheckerCluster.StartAsync(plan, silos, gateways, sharedStore);
        (string, Gateway.Tests.TestGateway)? Pick(Random r)
        {
            var live = Enumerable.Range(0, cluster.GatewayCount).Where(i => cluster.Gateway(i) is not null).ToList();
            if (live.Count == 0)
            {
                return null;
            }

            var i = live[r.Next(live.Count)];
            return ("gw" + i, cluster.Gateway(i)!);
        }

        var clients = Enumerable.Range(0, 4).Select(i =>
        {
            var own = new Random(random.Next());
            var mine = topics.Where(_ => own.NextDouble() < 0.5).ToList();
            if (mine.Count == 0)
            {
                mine.Add(topics[own.Next(topics.Length)]);
            }

            return new CheckerClient($"c{i}", mine, own, Pick, journal, disconnects: own.NextDouble() < 0.8, slowReader: own.NextDouble() < 0.3);
        }).ToList();
        var publishers = Enumerable.Range(0, 2).Select(i => new CheckerPublisher($"s{seed}p{i}", topics, new Random(random.Next()), Pick, journal)).ToList();

        using var stopClients = new CancellationTokenSource();
        using var stopPublishing = new CancellationTokenSource();
        var clientTasks = clients.Select(c => Task.Run(() => c.RunAsync(stopClients.Token))).ToList();

        // Subscribers first, so that they are subscribed across the publishes.
        await WaitAsync(() => clients.All(c => c.Subscribed), TimeSpan.FromSeconds(10));
        var publisherTasks = publishers.Select(p => Task.Run(() => p.RunAsync(stopPublishing.Token))).ToList();
        var disrupting = DisruptAsync(cluster, disruptions, journal);
        await Task.Delay(ActivePhase);
        await stopPublishing.CancelAsync();
        await Task.WhenAll(publisherTasks);
        await disrupting;

        journal.Add("faults stop; settling");
        plan.Stop();
        await cluster.LateAppendsAsync();
        foreach (var client in clients)
        {
            client.Settle();
        }

        var records = publishers.SelectMany(p => p.Records).ToList();
        var historyLost = cluster.StorePerSilo && disruptions.KillSiloAt >= 0;
        var checker = new Checker(records, clients, historyLost);
        var settled = await WaitAsync(checker.Settled, SettleLimit);
        journal.Add(settled ? "settled" : "did not settle");
        await stopClients.CancelAsync();
        await Task.WhenAll(clientTasks);

        var histories = new List<FinalHistory>();
        foreach (var topic in topics)
        {
            // The store of the silo the topic lives on is the one in the grain's epoch.
            var grain = cluster.Client.GetGrain<ITopicGrain>(topic);
            var position = await RetryAsync(grain.GetPositionAsync);
            StoredHistory? stored = null;
            foreach (var store in cluster.LiveStores)
            {
                if (await store.Inner.LoadAsync(topic, CheckerCluster.Bounds(topic)) is { } found && (stored is null || found.Epoch == position.Epoch))
                {
                    stored = found;
                }
            }

            var size = CheckerCluster.Bounds(topic).MaxCount;
            var read = stored is null ? null : await RetryAsync(() => grain.ReadAsync(Math.Max(0, stored.Head - size), size));
            histories.Add(new FinalHistory(topic, stored, read));
        }

        var final = new Checker(records, clients, historyLost);
        var violations = final.Check(histories);
        foreach (var repeated in final.RepeatedAfterHistoryLoss)
        {
            journal.Add("limit (Memory provider): " + repeated);
        }

        var summary = $"{records.Count} publishes ({records.Count(r => r.Acknowledged.Any())} acknowledged, "
            + $"{records.Count(r => r.FinallyNotPublished)} not published, "
            + $"{records.Count(r => r.Answers.Any(a => a.Outcome is PublishOutcome.MayHaveBeenPublished or PublishOutcome.NoAnswer))} once without a sure answer), "
            + $"{clients.Sum(c => c.Segments.Count)} subscriptions, {clients.Sum(c => c.Segments.Sum(s => s.Deliveries.Count))} deliveries, "
            + $"{clock.Elapsed.TotalSeconds:0.0} s; faults {rates}; {disruptions}; {(sharedStore ? "one store" : "a store per silo")}; injected: "
            + journal.Counts("store append fails", "store append applied", "store late append landed", "store load fails", "store findkey fails",
                "stream drop", "stream duplicate", "stream delay", "stream hold back", "call PublishAsync", "call AddInterestAsync", "call ReadAsync",
                "silo1 killed", "silo1 started", "gw1 lost") + $"; told: {clients.Sum(c => c.Segments.Count(s => s.Recovered == false))} recovered:false, "
            + $"{clients.Sum(c => c.Segments.Count(s => s.End?.StartsWith("reset", StringComparison.Ordinal) == true))} reset, "
            + $"{clients.Sum(c => c.Segments.Count(s => s.End?.StartsWith("bye", StringComparison.Ordinal) == true))} bye; "
            + $"topics acknowledged in more than one epoch: {records.GroupBy(r => r.Topic).Count(g => g.SelectMany(r => r.Acknowledged).Select(p => p.Epoch).Distinct().Count() > 1)}"
            + (final.RepeatedAfterHistoryLoss.Count > 0 ? "; keyed publishes repeated in a new epoch after their store died: " + string.Join("; ", final.RepeatedAfterHistoryLoss) : string.Empty);
        var log = violations.Count > 0 ? Excerpt(journal, violations[0], topics) : [];
        return new ScheduleResult(seed, summary, violations, log);
    }

    /// <summary>The events behind a violation: those that name the publish it is about (if any), then the last 50 about
    /// its topic (or the last 50 of all).</summary>
    private static List<string> Excerpt(Journal journal, string violation, string[] topics)
    {
        var topic = violation.Split(' ').FirstOrDefault(topics.Contains);
        var payload = System.Text.RegularExpressions.Regex.Match(violation, "\"p\":\"([^\"]+)\"");
        var events = payload.Success ? journal.Tail(20, payload.Groups[1].Value + "\"").ToList() : [];
        if (events.Count > 0)
        {
            events.Add("...");
        }

        events.AddRange(topic is null ? journal.Tail(50) : journal.Tail(50, topic));
        return events;
    }

    /// <summary>Which fault kinds this schedule uses, and how often: each kind is on in most schedules, at a rate of
    /// its own.</summary>
    private static FaultRates DrawRates(Random random)
    {
        double Rate(double max) => random.NextDouble() < 0.7 ? random.NextDouble() * max : 0;
        return new FaultRates
        {
            StoreFail = Rate(0.15),
            StoreAmbiguous = Rate(0.1),
            StoreLandLate = Rate(0.05),
            StoreSlow = Rate(0.2),
            StreamDrop = Rate(0.2),
            StreamDuplicate = Rate(0.1),
            StreamDelay = Rate(0.1),
            StreamReorder = Rate(0.1),
            CallFail = Rate(0.1),
            CallAmbiguous = Rate(0.05),
            CallSlow = Rate(0.1),
        };
    }

    /// <summary>When (milliseconds into the active phase) silo 1 is killed and restarted, and gateway 1 lost; -1: not
    /// in this schedule.</summary>
    private sealed record Disruptions(int KillSiloAt, int RestartSiloAfter, int LoseGatewayAt)
    {
        public override string ToString() =>
            $"silo1 kill {(KillSiloAt < 0 ? "-" : KillSiloAt + " ms")} restart {(KillSiloAt < 0 || RestartSiloAfter < 0 ? "-" : "+" + RestartSiloAfter + " ms")}, gw1 loss {(LoseGatewayAt < 0 ? "-" : LoseGatewayAt + " ms")}";
    }

    private static Disruptions DrawDisruptions(Random random)
    {
        var kill = random.NextDouble() < 0.5 ? random.Next(500, 3000) : -1;
        var restart = random.NextDouble() < 0.7 ? random.Next(500, 2500) : -1;
        var lose = random.NextDouble() < 0.3 ? random.Next(500, 4000) : -1;
        return new Disruptions(kill, restart, lose);
    }

    private static async Task DisruptAsync(CheckerCluster cluster, Disruptions disruptions, Journal journal)
    {
        async Task SiloAsync()
        {
            if (disruptions.KillSiloAt < 0)
            {
                return;
            }

            await Task.Delay(disruptions.KillSiloAt);
            await cluster.KillSiloAsync(1);
            if (disruptions.RestartSiloAfter >= 0)
            {
                await Task.Delay(disruptions.RestartSiloAfter);
                await cluster.StartSiloAsync(1);
            }
        }

        async Task GatewayAsync()
        {
            if (disruptions.LoseGatewayAt >= 0)
            {
                await Task.Delay(disruptions.LoseGatewayAt);
                await cluster.LoseGatewayAsync(1);
            }
        }

        try
        {
            await Task.WhenAll(SiloAsync(), GatewayAsync());
        }
        catch (Exception ex)
        {
            journal.Add($"disruption failed: {ex.GetType().Name}: {ex.Message}");
            throw;
        }
    }

    /// <summary>A final read, tried a few times: a silo restarted late in the schedule may still be joining.</summary>
    private static async Task<T> RetryAsync<T>(Func<Task<T>> read)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await read().WaitAsync(TimeSpan.FromSeconds(10));
            }
            catch (Exception ex) when (attempt < 5 && ex is not PushRejectedException { Code: "bad_topic" })
            {
                await Task.Delay(500 * attempt);
            }
        }
    }

    private static async Task<bool> WaitAsync(Func<bool> condition, TimeSpan limit)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            if (deadline.Elapsed > limit)
            {
                return false;
            }

            await Task.Delay(200);
        }

        return true;
    }
}
