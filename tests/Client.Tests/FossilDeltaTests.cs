using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;
using OrleansPush.Cluster.Tests;

namespace OrleansPush.Client.Tests;

/// <summary>The Fossil delta codec (<see cref="FossilDelta"/>, and the browser module's <c>fossil.js</c> through
/// Node): round trips, hostile deltas, and interoperability with the npm <c>fossil-delta</c> package, which nobody here
/// wrote.</summary>
public sealed class FossilDeltaTests(ITestOutputHelper output)
{
    private static readonly TimeSpan NodeTimeout = TimeSpan.FromSeconds(120);

    public static TheoryData<string, byte[], byte[]> EdgeCases()
    {
        var random = new Random(13);
        var text = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Range(0, 200).Select(i => $"line {i}: the quick brown fox\n")));
        var allBytes = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        var twiceAllBytes = allBytes.Concat(allBytes.Reverse()).ToArray();
        return new()
        {
            { "both empty", [], [] },
            { "empty source", [], text },
            { "empty target", text, [] },
            { "identical", text, text },
            { "one byte each", [1], [2] },
            { "shorter than a block", Encoding.UTF8.GetBytes("{\"a\":1}"), Encoding.UTF8.GetBytes("{\"a\":2}") },
            { "exactly one block, one byte changed", Bytes("0123456789abcdef"), Bytes("0123456789abcdeX") },
            { "completely different", RandomBytes(random, 3000), RandomBytes(random, 3000) },
            { "source longer (target is its middle)", text, text[1000..3000] },
            { "source shorter (target appends)", text[..1000], [.. text, .. text[..500]] },
            { "prefix changed", text, [.. Bytes("HEADER"), .. text[6..]] },
            { "suffix changed", text, [.. text[..^6], .. Bytes("FOOTER")] },
            { "blocks reordered", text, [.. text[2000..], .. text[..2000]] },
            { "one block repeated many times", Enumerable.Repeat(Bytes("abcdefghijklmnop"), 200).SelectMany(b => b).ToArray(), Enumerable.Repeat(Bytes("abcdefghijklmnop"), 300).SelectMany(b => b).ToArray() },
            { "all byte values", allBytes, allBytes.Reverse().ToArray() },
            { "all byte values, edited", twiceAllBytes, [.. twiceAllBytes[..100], 0, 255, 10, 58, 64, 44, 59, .. twiceAllBytes[90..]] },
            { "bytes that are delta syntax", Bytes("1:@,;\n~_0zZ1:@,;\n~_0zZ1:@,;\n~_0zZ"), Bytes("~_0zZ1:@,;\n~_0zZ1:@,;\n") },
        };
    }

    [Theory]
    [MemberData(nameof(EdgeCases))]
    public void DeltaRebuildsTheTargetByteForByte(string name, byte[] source, byte[] target)
    {
        var delta = FossilDelta.Create(source, target);
        Assert.True(target.AsSpan().SequenceEqual(FossilDelta.Apply(source, delta)), name);
        Assert.True(delta.Length <= target.Length + 21, $"{name}: a {delta.Length}-byte delta for a {target.Length}-byte target");
    }

    [Fact]
    public void DeltaOfAnIdenticalOrSlightlyEditedMebibyteIsTinyAndExact()
    {
        var random = new Random(1);
        var source = RandomBytes(random, 1 << 20);
        var target = (byte[])source.Clone();
        for (var i = 0; i < 20; i++)
        {
            target[random.Next(target.Length)] ^= 0x5a;
        }

        var same = FossilDelta.Create(source, source);
        Assert.Equal(source, FossilDelta.Apply(source, same));
        Assert.True(same.Length < 20, $"identical 1 MiB: {same.Length}-byte delta {Encoding.ASCII.GetString(same)}");

        var edited = FossilDelta.Create(source, target);
        Assert.Equal(target, FossilDelta.Apply(source, edited));
        Assert.True(edited.Length < 20 * 20, $"20 changed bytes in 1 MiB: {edited.Length}-byte delta");
    }

    [Fact]
    public void GameStateDeltasAreAFractionOfTheMessageAndTryCreateSmallerSaysWhenTheyAreNot()
    {
        var feed = new GameStateFeed(seed: 7);
        var previous = feed.Next();
        long whole = 0, deltas = 0;
        for (var step = 0; step < 200; step++)
        {
            var next = feed.Next();
            Assert.True(FossilDelta.TryCreateSmaller(previous, next, out var delta), $"step {step}: no smaller delta");
            Assert.Equal(next, FossilDelta.Apply(previous, delta));
            whole += next.Length;
            deltas += delta.Length;
            previous = next;
        }

        Assert.True(deltas * 5 < whole, $"deltas {deltas} bytes for {whole} bytes of messages");

        var random = new Random(3);
        var unrelated = RandomBytes(random, 2000);
        Assert.False(FossilDelta.TryCreateSmaller(previous, unrelated, out var none));
        Assert.Null(none);
        Assert.False(FossilDelta.TryCreateSmaller(previous, [], out _));
    }

    public static TheoryData<string, string> MalformedDeltas() => new()
    {
        { "empty", "" },
        { "no header digits", "\n0;" },
        { "header without newline", "5" },
        { "header with a bad terminator", "5:hello" },
        { "ends after the header", "5\n" },
        { "literal longer than the delta", "5\n9:hello" },
        { "literal past the declared size", "3\n5:hello" },
        { "copy past the end of the source", "5\n5@Z,0;" },
        { "copy offset over 32 bits", "5\n5@~~~~~~,0;" },
        { "copy past the declared size", "2\n5@0,0;" },
        { "copy without its comma", "5\n5@0;" },
        { "unknown command", "5\n5!hello" },
        { "number with seven digits", "0000001\n1:a0;" },
        { "number over 32 bits", "~~~~~~\n0;" },
        { "builds fewer bytes than declared", "6\n5:hello0;" },
        { "wrong checksum", "5\n5:helloX;" },
        { "bytes after the trailer", "0\n0;;" },
        { "no trailer", "5\n5:hello" },
        { "checksum without its semicolon", "5\n5:hello1" },
    };

    [Theory]
    [MemberData(nameof(MalformedDeltas))]
    public void MalformedDeltaIsRefusedWithAFormatException(string name, string delta)
    {
        var source = Bytes("the source: 0123456789");
        var error = Assert.Throws<FormatException>(() => FossilDelta.Apply(source, Encoding.Latin1.GetBytes(delta)));
        Assert.True(error.Message.StartsWith("Malformed Fossil delta: ", StringComparison.Ordinal), $"{name}: {error.Message}");
    }

    [Fact]
    public void DeclaredSizeOverTheLimitIsRefusedBeforeAnythingIsBuilt()
    {
        var huge = Bytes("~~~~~\n0;"); // declares 2^30 - 1 bytes and builds none
        var error = Assert.Throws<FormatException>(() => FossilDelta.Apply([], huge));
        Assert.Contains("over the limit of 16777216", error.Message, StringComparison.Ordinal);

        var target = Bytes("a target of 22 bytes..");
        var delta = FossilDelta.Create([], target);
        Assert.Throws<FormatException>(() => FossilDelta.Apply([], delta, maxOutputSize: 21));
        Assert.Equal(target, FossilDelta.Apply([], delta, maxOutputSize: 22));
    }

    [Fact]
    public void RandomTruncatedAndMutatedDeltasOnlyEverThrowFormatException()
    {
        var random = new Random(42);
        var feed = new GameStateFeed(seed: 42);
        var source = feed.Next();
        var target = feed.Next();
        var delta = FossilDelta.Create(source, target);
        var outcomes = new Dictionary<string, int>();

        void Check(byte[] candidate)
        {
            try
            {
                var built = FossilDelta.Apply(source, candidate, maxOutputSize: 1 << 16);
                Assert.True(built.Length <= 1 << 16);
                outcomes["applied"] = outcomes.GetValueOrDefault("applied") + 1;
            }
            catch (FormatException)
            {
                outcomes["refused"] = outcomes.GetValueOrDefault("refused") + 1;
            }
        }

        for (var length = 0; length < delta.Length; length++)
        {
            Check(delta[..length]);
        }

        foreach (var candidate in Mutations(random, delta, 20_000))
        {
            Check(candidate);
        }

        for (var i = 0; i < 5_000; i++)
        {
            Check(RandomDeltaLike(random));
        }

        Assert.True(outcomes.GetValueOrDefault("refused") > 10_000, string.Join(", ", outcomes));
    }

    /// <summary>Our C# encoder, our JS module and npm fossil-delta, each against the others (tests/browser/fossil-interop.mjs):
    /// 1,000 steps of a game state, random binary pairs and the edge cases; plus hostile deltas, which our JS decoder
    /// must judge as the C# one does.</summary>
    [Fact]
    public async Task DeltasInteroperateWithNpmFossilDeltaAndTheBrowserModuleInBothDirections()
    {
        var scripts = Path.Combine(RepositoryRoot(), "tests", "browser");
        Assert.True(File.Exists(Path.Combine(scripts, "node_modules", "fossil-delta", "package.json")),
            $"fossil-delta is not installed: run 'npm install' in {scripts} (./test.sh does).");

        var cases = InteropCases().ToList();
        Assert.True(cases.Count >= 1_300, $"{cases.Count} cases");
        var hostile = HostileDeltas().ToList();
        var work = Directory.CreateTempSubdirectory("orleanspush-fossil-");
        try
        {
            var casesFile = Path.Combine(work.FullName, "cases.jsonl");
            var resultsFile = Path.Combine(work.FullName, "results.jsonl");
            await File.WriteAllLinesAsync(casesFile, cases.Select(c => new JsonObject
            {
                ["id"] = c.Id,
                ["source"] = Convert.ToBase64String(c.Source),
                ["target"] = Convert.ToBase64String(c.Target),
                ["delta"] = Convert.ToBase64String(FossilDelta.Create(c.Source, c.Target)),
            }.ToJsonString()).Concat(hostile.Select(h => new JsonObject
            {
                ["id"] = h.Id,
                ["source"] = Convert.ToBase64String(h.Source),
                ["hostile"] = Convert.ToBase64String(h.Delta),
                ["built"] = h.Built is null ? null : Convert.ToBase64String(h.Built),
            }.ToJsonString())));

            await using (var node = NodeProcess.Start("fossil-interop", "node", ["fossil-interop.mjs", casesFile, resultsFile], scripts))
            {
                var exitCode = await node.WaitForExitAsync(NodeTimeout);
                Assert.True(exitCode == 0, $"fossil-interop.mjs exited {exitCode}:\n{node.Tail()}");
                Assert.Contains("OK fossil-interop", node.Tail(), StringComparison.Ordinal);
                output.WriteLine(node.Tail());
            }

            var results = (await File.ReadAllLinesAsync(resultsFile)).Select(l => JsonNode.Parse(l)!).ToDictionary(r => (string)r["id"]!);
            long ours = 0, npm = 0, stateOurs = 0, stateNpm = 0, stateWhole = 0;
            foreach (var c in cases)
            {
                var result = results[c.Id];
                var npmDelta = Convert.FromBase64String((string)result["npmDelta"]!);
                var jsDelta = Convert.FromBase64String((string)result["jsDelta"]!);
                Assert.True(c.Target.AsSpan().SequenceEqual(FossilDelta.Apply(c.Source, npmDelta)), $"{c.Id}: npm's delta, applied by C#");
                Assert.True(c.Target.AsSpan().SequenceEqual(FossilDelta.Apply(c.Source, jsDelta)), $"{c.Id}: fossil.js's delta, applied by C#");
                var ourLength = FossilDelta.Create(c.Source, c.Target).Length;
                ours += ourLength;
                npm += npmDelta.Length;
                if (c.Id.StartsWith("state-", StringComparison.Ordinal))
                {
                    (stateOurs, stateNpm, stateWhole) = (stateOurs + ourLength, stateNpm + npmDelta.Length, stateWhole + c.Target.Length);
                }
            }

            output.WriteLine($"game state steps: messages {stateWhole} bytes, our deltas {stateOurs}, npm fossil-delta's {stateNpm}");

            // Not a race between encoders, but a guard against a wasteful one: ours may not be much larger than npm's.
            Assert.True(ours <= npm + (npm / 20), $"our deltas total {ours} bytes, npm fossil-delta's {npm}");
            Assert.Equal(hostile.Count, results.Count - cases.Count);
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    private sealed record InteropCase(string Id, byte[] Source, byte[] Target);

    private sealed record HostileCase(string Id, byte[] Source, byte[] Delta, byte[]? Built);

    private static IEnumerable<InteropCase> InteropCases()
    {
        var feed = new GameStateFeed(seed: 2024);
        var previous = feed.Next();
        for (var step = 0; step < 1_000; step++)
        {
            var next = feed.Next();
            yield return new($"state-{step}", previous, next);
            previous = next;
        }

        var random = new Random(99);
        for (var i = 0; i < 300; i++)
        {
            var source = i % 3 == 0 ? LowEntropyBytes(random, random.Next(0, 4096)) : RandomBytes(random, random.Next(0, 4096));
            var target = i % 10 == 0 ? RandomBytes(random, random.Next(0, 4096)) : Edit(random, source);
            yield return new($"binary-{i}", source, target);
        }

        foreach (var edge in EdgeCases())
        {
            yield return new($"edge-{edge[0]}", (byte[])edge[1], (byte[])edge[2]);
        }
    }

    /// <summary>Mutated and random deltas with the C# decoder's verdict (the bytes it built, or null for refused).</summary>
    private static IEnumerable<HostileCase> HostileDeltas()
    {
        var random = new Random(5);
        var feed = new GameStateFeed(seed: 5);
        var source = feed.Next();
        var delta = FossilDelta.Create(source, feed.Next());
        var i = 0;
        foreach (var candidate in Mutations(random, delta, 1_000).Concat(Enumerable.Range(0, 500).Select(_ => RandomDeltaLike(random))))
        {
            byte[]? built;
            try
            {
                built = FossilDelta.Apply(source, candidate, maxOutputSize: 1 << 16);
            }
            catch (FormatException)
            {
                built = null;
            }

            yield return new($"hostile-{i++}", source, candidate, built);
        }
    }

    /// <summary>Copies of a valid delta with one to three bytes changed (often to delta syntax), inserted or removed.</summary>
    private static IEnumerable<byte[]> Mutations(Random random, byte[] delta, int count)
    {
        var syntax = Bytes("0123456789AZaz_~@,:;\n");
        for (var i = 0; i < count; i++)
        {
            var mutant = new List<byte>(delta);
            for (var edits = random.Next(1, 4); edits > 0 && mutant.Count > 0; edits--)
            {
                var at = random.Next(mutant.Count);
                var value = random.Next(2) == 0 ? syntax[random.Next(syntax.Length)] : (byte)random.Next(256);
                switch (random.Next(3))
                {
                    case 0:
                        mutant[at] = value;
                        break;
                    case 1:
                        mutant.Insert(at, value);
                        break;
                    default:
                        mutant.RemoveAt(at);
                        break;
                }
            }

            yield return [.. mutant];
        }
    }

    /// <summary>Random strings over the delta alphabet, shaped like a header and a few segments.</summary>
    private static byte[] RandomDeltaLike(Random random)
    {
        var syntax = "0123456789ABCxyz~_@,:;\n";
        var text = new StringBuilder();
        text.Append(random.Next(0, 300).ToString("x", System.Globalization.CultureInfo.InvariantCulture)).Append('\n');
        for (var i = random.Next(0, 12); i > 0; i--)
        {
            text.Append(syntax[random.Next(syntax.Length)]);
        }

        return Encoding.Latin1.GetBytes(text.ToString());
    }

    /// <summary>A target made from a source by a few random inserts, deletions, replacements and moved chunks.</summary>
    private static byte[] Edit(Random random, byte[] source)
    {
        var bytes = new List<byte>(source);
        for (var edits = random.Next(1, 8); edits > 0; edits--)
        {
            var at = random.Next(bytes.Count + 1);
            var length = Math.Min(random.Next(1, 64), bytes.Count - at);
            switch (random.Next(4))
            {
                case 0:
                    bytes.InsertRange(at, RandomBytes(random, random.Next(1, 64)));
                    break;
                case 1:
                    bytes.RemoveRange(at, length);
                    break;
                case 2:
                    for (var k = at; k < at + length; k++)
                    {
                        bytes[k] = (byte)random.Next(256);
                    }

                    break;
                default:
                    var chunk = bytes.GetRange(at, length);
                    bytes.RemoveRange(at, length);
                    bytes.InsertRange(random.Next(bytes.Count + 1), chunk);
                    break;
            }
        }

        return [.. bytes];
    }

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    /// <summary>Bytes from a four-letter alphabet: many source blocks share a hash, which bounds the candidate search.</summary>
    private static byte[] LowEntropyBytes(Random random, int length) =>
        Enumerable.Range(0, length).Select(_ => "ACGT"u8[random.Next(4)]).ToArray();

    private static byte[] Bytes(string text) => Encoding.Latin1.GetBytes(text);

    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "OrleansPush.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("OrleansPush.sln not found above " + AppContext.BaseDirectory);
    }
}
