using System.Text.RegularExpressions;

namespace OrleansPush.Deploy.Tests;

/// <summary>The gateway talks to grains only through <c>Grains.Interfaces</c> (whose types live in the <c>OrleansPush</c>
/// namespace itself) and the shared <c>Hosting</c> library; the grain implementations (namespaces under
/// <c>OrleansPush.Grains</c>) are named only where the embedded silo is wired.</summary>
public sealed partial class GatewayReferenceTests
{
    /// <summary>The one gateway file that may name the grain implementations.</summary>
    private static readonly string EmbeddedSiloWiring = Path.Combine("Hosting", "EmbeddedSilo.cs");

    [Fact]
    public void OnlyTheEmbeddedSiloWiringOfTheGatewayNamesTheGrainImplementations()
    {
        var gateway = Path.Combine(Manifests.Root, "Gateway");
        var users = Directory.EnumerateFiles(gateway, "*.cs", SearchOption.AllDirectories)
            .Where(f => !IsBuildOutput(Path.GetRelativePath(gateway, f)))
            .Where(f => NamesGrains(File.ReadAllText(f)))
            .Select(f => Path.GetRelativePath(gateway, f))
            .Order(StringComparer.Ordinal)
            .ToList();

        // The scan sees the wiring that does use them, so an empty list means "nobody else", not "nothing read".
        Assert.Equal([EmbeddedSiloWiring], users);
    }

    [Theory]
    [InlineData("using OrleansPush.Grains.Streams;", true)]
    [InlineData("using OrleansPush.Grains;", true)]
    [InlineData("var x = global::OrleansPush.Grains.History.MemoryHistoryStore.Create();", true)]
    [InlineData("using static OrleansPush.Grains.PushSilo;", true)]
    [InlineData("using OrleansPush.Hosting;", false)]
    [InlineData("using OrleansPush;", false)]
    [InlineData("// the queue is in OrleansPush.Grains.Streams", false)]
    [InlineData("/// <summary>See OrleansPush.Grains.</summary>", false)]
    public void TheScanTellsAUseOfTheGrainNamespacesFromOtherCode(string line, bool names) =>
        Assert.Equal(names, NamesGrains(line));

    /// <summary>Whether code (not a comment) names a namespace of the <c>Grains</c> project.</summary>
    private static bool NamesGrains(string source) =>
        source.Split('\n').Any(line => !line.TrimStart().StartsWith("//", StringComparison.Ordinal) && GrainsNamespace().IsMatch(line));

    private static bool IsBuildOutput(string relative) =>
        relative.StartsWith("obj" + Path.DirectorySeparatorChar, StringComparison.Ordinal)
        || relative.StartsWith("bin" + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    // Grains.Interfaces declares only the OrleansPush namespace; every OrleansPush.Grains namespace is the Grains project.
    [GeneratedRegex(@"\bOrleansPush\.Grains\b(?!\.Interfaces\b)")]
    private static partial Regex GrainsNamespace();
}
