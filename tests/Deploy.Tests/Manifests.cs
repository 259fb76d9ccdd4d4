using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.Serialization;

namespace OrleansPush.Deploy.Tests;

/// <summary>
/// The repository's deploy/ folder, read the way kustomize would build it. kubectl is not available on these
/// machines, so <see cref="Render"/> implements the small part of kustomize the manifests use: <c>resources</c>
/// (files and directories) and <c>images</c>. A kustomization using anything else fails the tests, so that the
/// renderer and the manifests cannot silently drift apart.
/// </summary>
internal static class Manifests
{
    private static readonly string[] SupportedKeys = ["apiVersion", "kind", "resources", "images", "labels"];

    public static string Root { get; } = FindRoot();

    public static string DeployFolder => Path.Combine(Root, "deploy");

    public static string Kubernetes => Path.Combine(DeployFolder, "k8s");

    public static IEnumerable<string> Overlays => Directory.GetDirectories(Path.Combine(Kubernetes, "overlays")).Order(StringComparer.Ordinal);

    /// <summary>Every YAML document of a file, as nested dictionaries and lists.</summary>
    public static List<Dictionary<string, object?>> ReadDocuments(string file)
    {
        using var reader = new StringReader(File.ReadAllText(file));
        var parser = new Parser(reader);
        var deserializer = new DeserializerBuilder().Build();
        parser.Consume<StreamStart>();
        var documents = new List<Dictionary<string, object?>>();
        while (parser.Accept<DocumentStart>(out _))
        {
            if (Normalize(deserializer.Deserialize<object?>(parser)) is Dictionary<string, object?> document)
            {
                documents.Add(document);
            }
        }

        return documents;
    }

    /// <summary>The objects a kustomization directory builds to.</summary>
    public static List<Dictionary<string, object?>> Render(string directory)
    {
        var kustomization = Assert.Single(ReadDocuments(Path.Combine(directory, "kustomization.yaml")));
        foreach (var key in kustomization.Keys)
        {
            Assert.True(SupportedKeys.Contains(key), $"{directory}/kustomization.yaml uses '{key}', which the test renderer does not implement");
        }

        var objects = new List<Dictionary<string, object?>>();
        foreach (var resource in Seq(kustomization, "resources").Cast<string>())
        {
            var path = Path.GetFullPath(Path.Combine(directory, resource));
            objects.AddRange(Directory.Exists(path) ? Render(path) : ReadDocuments(path));
        }

        foreach (var image in Seq(kustomization, "images").Cast<Dictionary<string, object?>>())
        {
            var name = (string)image["name"]!;
            foreach (var container in objects.Where(o => Kind(o) == "Deployment").SelectMany(Containers))
            {
                if ((string)container["image"]! == name)
                {
                    var newName = image.TryGetValue("newName", out var n) ? (string)n! : name;
                    container["image"] = image.TryGetValue("newTag", out var tag) ? $"{newName}:{tag}" : newName;
                }
            }
        }

        return objects;
    }

    public static string Kind(Dictionary<string, object?> o) => (string)o["kind"]!;

    public static string Name(Dictionary<string, object?> o) => (string)Map(o, "metadata")["name"]!;

    public static Dictionary<string, object?> Map(Dictionary<string, object?> o, params string[] path)
    {
        var current = o;
        foreach (var key in path)
        {
            Assert.True(current.TryGetValue(key, out var next) && next is Dictionary<string, object?>, $"missing mapping '{key}' in {string.Join('.', path)}");
            current = (Dictionary<string, object?>)next!;
        }

        return current;
    }

    public static List<object?> Seq(Dictionary<string, object?> o, string key) =>
        o.TryGetValue(key, out var value) && value is List<object?> list ? list : [];

    public static IEnumerable<Dictionary<string, object?>> Containers(Dictionary<string, object?> deployment) =>
        Seq(Map(deployment, "spec", "template", "spec"), "containers").Cast<Dictionary<string, object?>>();

    public static Dictionary<string, object?> Single(List<Dictionary<string, object?>> objects, string kind, string name) =>
        Assert.Single(objects, o => Kind(o) == kind && Name(o) == name);

    /// <summary>The environment a container's variables give the app: literal values, and the keys of referenced
    /// ConfigMaps and Secrets that are part of the rendering.</summary>
    public static Dictionary<string, string?> EnvOf(List<Dictionary<string, object?>> objects, Dictionary<string, object?> container)
    {
        var env = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var source in Seq(container, "envFrom").Cast<Dictionary<string, object?>>())
        {
            var (kind, reference) = source.TryGetValue("configMapRef", out var c) ? ("ConfigMap", c) : ("Secret", source["secretRef"]);
            var name = (string)((Dictionary<string, object?>)reference!)["name"]!;
            var referenced = Assert.Single(objects, o => Kind(o) == kind && Name(o) == name);
            var data = kind == "ConfigMap" ? Map(referenced, "data") : Map(referenced, "stringData");
            foreach (var (key, value) in data)
            {
                env[key] = value?.ToString();
            }
        }

        foreach (var variable in Seq(container, "env").Cast<Dictionary<string, object?>>())
        {
            env[(string)variable["name"]!] = variable.TryGetValue("value", out var value) ? value?.ToString() : null;
        }

        return env;
    }

    private static object? Normalize(object? value) => value switch
    {
        Dictionary<object, object?> map => map.ToDictionary(kv => kv.Key.ToString()!, kv => Normalize(kv.Value), StringComparer.Ordinal),
        List<object?> list => list.Select(Normalize).ToList(),
        _ => value,
    };

    private static string FindRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "OrleansPush.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new InvalidOperationException("repository root not found");
    }
}
